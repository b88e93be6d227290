//! The command line, as clap derive types. Flag names follow the `az` commands of the tutorial
//! so that people (and scripts) can switch with only the program name changed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sandpool",
    version,
    about = "Self-hosted sandboxes behind an Azure-shaped API"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Base URL of the sandpool server.
    #[arg(
        long,
        global = true,
        env = "SANDPOOL_ENDPOINT",
        default_value = "http://127.0.0.1:8080"
    )]
    pub endpoint: String,
    /// Data directory of the local server (where its admin credential lives).
    #[arg(
        long,
        global = true,
        env = "SANDPOOL_DATA_DIR",
        default_value = "/var/lib/sandpool"
    )]
    pub data_dir: PathBuf,
    /// PEM file of certificates to trust for an https endpoint, beside the system's store (e.g.
    /// the `<data-dir>/tls/cert.pem` that `serve --tls-self-signed` writes; that one is trusted
    /// without this flag when the data dir holds it).
    #[arg(long, global = true, env = "SANDPOOL_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Subscription id (any UUID).
    #[arg(long, global = true, env = "SANDPOOL_SUBSCRIPTION", default_value = sandpool_client::DEFAULT_SUBSCRIPTION)]
    pub subscription: String,
    /// Bearer token to send instead of the local admin credential.
    #[arg(
        long,
        global = true,
        env = "SANDPOOL_ACCESS_TOKEN",
        hide_env_values = true
    )]
    pub access_token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Json)]
    pub output: Output,
    /// JMESPath query applied to the result before it is printed.
    #[arg(long, global = true)]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    /// Compact JSON on one line.
    Jsonc,
    Table,
    Tsv,
    None,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sandpool server.
    Serve(Box<ServeArgs>),
    /// Manage resource groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Manage session pools.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Deploy ARM templates.
    #[command(subcommand)]
    Deployment(DeploymentCmd),
    /// Manage user-assigned identities.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Manage managed clusters (Run Command targets).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Manage role assignments.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Any resource by its id.
    #[command(subcommand)]
    Resource(ResourceCmd),
    /// Check what this host offers the sandbox runtime.
    Doctor,
    /// Print an access token (like `az account get-access-token`).
    Token(TokenArgs),
    /// `exec`, `files` and `session`: the session data plane.
    #[command(flatten)]
    Sessions(crate::sessions::SessionsCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Database URL (`sqlite://…` or `postgres://…`); default: SQLite in the data directory.
    #[arg(long, env = "SANDPOOL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Base of the absolute URLs the API returns; default: derived from --listen.
    #[arg(long)]
    pub public_url: Option<String>,
    /// PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate generated at start.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Do not create resource group `default` and pool `default` on first start.
    #[arg(long)]
    pub no_defaults: bool,
    /// Largest file upload, e.g. `128MiB`, `1G`, `1048576`.
    #[arg(long, default_value = "128MiB", value_parser = crate::units::parse_size)]
    pub max_upload_size: u64,
    /// How long Run Command results are kept, e.g. `7d`, `12h`, `30m`.
    #[arg(long, default_value = "7d", value_parser = crate::units::parse_duration)]
    pub command_retention: std::time::Duration,
    /// Age at which the token signing key is replaced, e.g. `30d`; `0` never rotates. Tokens
    /// signed by a replaced key stay valid until they expire; JWKS lists both meanwhile.
    #[arg(long, default_value = "30d", value_parser = crate::units::parse_duration)]
    pub signing_key_max_age: std::time::Duration,
    /// Most Run Command commands running at once (the others wait in the queue).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub command_concurrency: u16,
    /// Log format (filter with RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Give sandboxes no egress: no bridge, nftables tables or network slots are set up (the
    /// --egress-* flags are ignored), and sessions of pools with `EgressEnabled` fail with an
    /// error that says so.
    #[arg(long, env = "SANDPOOL_NO_EGRESS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_egress: bool,
    /// Host bridge of the sandboxes' egress; its nftables tables (`inet`, `bridge`) take its
    /// name (`sandpool` for the default bridge).
    #[arg(long, env = "SANDPOOL_EGRESS_BRIDGE", value_name = "NAME",
          default_value = "sandpool0", value_parser = sandpool_server::sandboxes::parse_bridge_name)]
    pub egress_bridge: String,
    /// IPv4 subnet of the egress slots (the bridge takes its first address), e.g. `10.213.0.0/16`.
    #[arg(long, env = "SANDPOOL_EGRESS_SUBNET", value_name = "CIDR",
          default_value = "10.213.0.0/16", value_parser = sandpool_server::sandboxes::parse_subnet)]
    pub egress_subnet: sandpool_server::sandboxes::Ipv4Net,
    /// Cgroup (in every hierarchy) below which each sandbox gets its own.
    #[arg(long, env = "SANDPOOL_CGROUP_PARENT", value_name = "NAME",
          default_value = sandpool_server::sandboxes::DEFAULT_CGROUP_PARENT,
          value_parser = sandpool_server::sandboxes::parse_cgroup_parent)]
    pub cgroup_parent: String,
    /// First host uid of the sandboxes' uid ranges (65,536 uids each).
    #[arg(long, env = "SANDPOOL_UID_BASE", value_name = "N",
          default_value_t = sandpool_server::sandboxes::DEFAULT_UID_BASE,
          value_parser = sandpool_server::sandboxes::parse_uid_base)]
    pub uid_base: u32,
    /// Most sandboxes at once, each with its own 65,536 uids: this instance's host uid range is
    /// N ranges from --uid-base, which no other instance on the host may overlap.
    #[arg(long, env = "SANDPOOL_UID_SLOTS", value_name = "N",
          default_value_t = sandpool_sandbox::DEFAULT_UID_SLOTS,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub uid_slots: u32,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The bounds of `sandpool serve` (docs/cli.md, "Limits"). Unset: derived from this host.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// CPU cores a session gets when its pool names none (`customContainerTemplate…resources.cpu`).
    #[arg(long, value_name = "CORES", default_value = "1", value_parser = crate::units::parse_cores)]
    pub session_cpus: u64,
    /// Most CPU cores one session or Run Command may ask for; default: the host's cores.
    #[arg(long, value_name = "CORES", value_parser = crate::units::parse_cores)]
    pub max_session_cpus: Option<u64>,
    /// CPU cores all sandboxes of this server may use together (set on its cgroup parent);
    /// default: no ceiling below the host's cores.
    #[arg(long, value_name = "CORES", value_parser = crate::units::parse_cores)]
    pub host_cpu_ceiling: Option<u64>,
    /// Most memory one session or Run Command may ask for, e.g. `8GiB`; default: the host's.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub max_session_memory: Option<u64>,
    /// Most processes a Run Command cluster may allow per command; default: a quarter of the
    /// kernel's pid_max.
    #[arg(long, value_name = "N")]
    pub max_session_pids: Option<u64>,
    /// Largest `maxConcurrentSessions` a pool may have.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_pool_sessions: u32,
    /// Largest `readySessionInstances` a pool may have.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub max_ready_sessions: u32,
    /// Executions running at once in one session; more get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_session_executions: u32,
    /// Execution records kept per session (the oldest go first).
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub execution_history: u32,
    /// Age after which an execution record is deleted, e.g. `7d`, `12h`.
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = crate::units::parse_duration)]
    pub execution_retention: std::time::Duration,
    /// Largest Run Command request body (its context is a base64 zip), e.g. `8MiB`.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = crate::units::parse_size)]
    pub max_run_command_body: u64,
    /// Run Command commands accepted and waiting for a worker; more get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued_commands: u32,
    /// Time a client has to send a request's headers; past it the connection is closed.
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = crate::units::parse_duration)]
    pub http_header_timeout: std::time::Duration,
    /// Longest pause in a request body; past it the request is answered 408.
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = crate::units::parse_duration)]
    pub http_body_timeout: std::time::Duration,
    /// Longest time to answer a request (above the longest synchronous execution, 1 h).
    #[arg(long, value_name = "TIME", default_value = "65m", value_parser = crate::units::parse_duration)]
    pub http_request_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct GroupName {
    /// Resource group name.
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "resource-group",
        short_alias = 'g'
    )]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create or update a resource group.
    Create {
        #[command(flatten)]
        name: GroupName,
        /// Location (any label; sandpool runs everything on this host).
        #[arg(short = 'l', long)]
        location: String,
    },
    Show {
        #[command(flatten)]
        name: GroupName,
    },
    List,
    /// Delete a resource group and everything in it.
    Delete {
        #[command(flatten)]
        name: GroupName,
        /// Accepted for compatibility with `az`; sandpool never prompts.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// `-g RG -n NAME` of a resource inside a group.
#[derive(Debug, Args)]
pub struct Target {
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

/// `[-g RG]`: one group or the whole subscription.
#[derive(Debug, Args)]
pub struct Scope {
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkStatus {
    #[value(name = "EgressEnabled")]
    EgressEnabled,
    #[value(name = "EgressDisabled")]
    EgressDisabled,
}

impl NetworkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EgressEnabled => "EgressEnabled",
            Self::EgressDisabled => "EgressDisabled",
        }
    }
}

#[derive(Debug, Args)]
pub struct PoolSettings {
    #[arg(short = 'l', long)]
    pub location: Option<String>,
    /// Container type (`Shell`).
    #[arg(long)]
    pub container_type: Option<String>,
    /// Most sessions alive at once.
    #[arg(long)]
    pub max_sessions: Option<u32>,
    /// Sandboxes kept started ahead of demand.
    #[arg(long)]
    pub ready_sessions: Option<u32>,
    /// Seconds of idleness after which a session is destroyed.
    #[arg(long)]
    pub cooldown_period: Option<u32>,
    #[arg(long, value_enum)]
    pub network_status: Option<NetworkStatus>,
    /// CPU cores per session, e.g. 0.5.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory per session, e.g. `1Gi`.
    #[arg(long)]
    pub memory: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Create or replace a session pool (location defaults to the group's).
    Create {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        settings: PoolSettings,
    },
    Show {
        #[command(flatten)]
        target: Target,
    },
    List {
        #[command(flatten)]
        scope: Scope,
    },
    /// Change only the given settings.
    Update {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        settings: PoolSettings,
    },
    Delete {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCmd {
    /// Deploy an ARM template (comments allowed) into a resource group.
    Create {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// Deployment name; default: the template file's name without extension.
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
        #[arg(short = 'f', long)]
        template_file: PathBuf,
        /// `name=value`, `@parameters.json`, or a JSON object; repeatable.
        #[arg(short = 'p', long, num_args = 1..)]
        parameters: Vec<String>,
    },
    Show {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// An identity's client secret.
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Create a user-assigned identity (location defaults to the group's).
    /// The answer holds `properties.clientSecret`, shown this once.
    Create {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    Show {
        #[command(flatten)]
        target: Target,
    },
    List {
        #[command(flatten)]
        scope: Scope,
    },
    Delete {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Egress {
    #[value(name = "Enabled")]
    Enabled,
    #[value(name = "Disabled")]
    Disabled,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create or replace a managed cluster (location defaults to the group's).
    Create {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// CPU cores per command sandbox.
        #[arg(long)]
        cpu: Option<f64>,
        /// Memory per command sandbox, e.g. `512Mi`.
        #[arg(long)]
        memory: Option<String>,
        /// Most processes per command sandbox.
        #[arg(long)]
        pids: Option<u32>,
        #[arg(long, value_enum)]
        egress: Option<Egress>,
        /// Seconds before a command is stopped.
        #[arg(long)]
        command_timeout: Option<u32>,
        /// A kubeconfig file made available to commands at /root/.kube/config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    Show {
        #[command(flatten)]
        target: Target,
    },
    List {
        #[command(flatten)]
        scope: Scope,
    },
    Delete {
        #[command(flatten)]
        target: Target,
    },
    /// Run commands in fresh sandboxes of a cluster (like `az aks command`).
    #[command(subcommand)]
    Command(crate::runcommand::CommandCmd),
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Role assignments.
    #[command(subcommand)]
    Assignment(AssignmentCmd),
    /// Role definitions.
    #[command(subcommand)]
    Definition(DefinitionCmd),
}

#[derive(Debug, Subcommand)]
pub enum AssignmentCmd {
    /// Give a principal a role at a scope.
    Create {
        /// Principal id (e.g. an identity's `properties.principalId`).
        #[arg(long)]
        assignee: String,
        /// Role name (e.g. "Azure ContainerApps Session Executor") or role definition id.
        #[arg(long)]
        role: String,
        /// A resource id, group id, subscription id path or `/`.
        #[arg(long)]
        scope: String,
    },
    List {
        /// Default: the subscription.
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        assignee: Option<String>,
    },
    Delete {
        /// Full role assignment id(s).
        #[arg(long, required = true, num_args = 1..)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DefinitionCmd {
    List {
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ResourceCmd {
    /// Show resources by their full ids.
    Show {
        #[arg(long, required = true, num_args = 1..)]
        ids: Vec<String>,
    },
    /// Delete resources by their full ids.
    Delete {
        #[arg(long, required = true, num_args = 1..)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    /// Issue a new client secret (the previous one stops working); prints it once.
    Reset {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Resource (audience) the token is for: the management API or `https://dynamicsessions.io`.
    #[arg(long, default_value = sandpool_client::MANAGEMENT_AUDIENCE)]
    pub resource: String,
    /// A token of this user-assigned identity (with -g and its client secret) instead of the
    /// local admin's.
    #[arg(long, requires = "resource_group", requires = "client_secret")]
    pub identity: Option<String>,
    /// Resource group of --identity.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    /// The identity's client secret (from `identity create` or `identity credential reset`).
    #[arg(long, env = "SANDPOOL_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
}
