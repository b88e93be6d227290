//! rtnetlink operations on the host and inside a slot.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::NetError;

/// Name of the slot's interface inside its namespace.
const INNER_IF: &str = "eth0";

fn nl_err(what: &str, e: rtnetlink::Error) -> NetError {
    NetError::Netlink(format!("{what}: {e}"))
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink connection in the host's (the caller's) network namespace.
pub(crate) struct Host {
    handle: Handle,
}

impl Host {
    pub fn connect() -> Result<Host, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetError::Io {
            context: "opening netlink socket".into(),
            source: e,
        })?;
        tokio::spawn(conn);
        Ok(Host { handle })
    }

    async fn index_of(&self, name: &str) -> Result<Option<u32>, NetError> {
        index_of(&self.handle, name).await
    }

    /// Creates the bridge if missing, gives it `gw/prefix` and brings it up. Idempotent.
    /// Returns its index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gw: Ipv4Addr,
        prefix: u8,
    ) -> Result<u32, NetError> {
        let index = match self.index_of(name).await? {
            Some(i) => i,
            None => {
                match self
                    .handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    // Another pool on the same bridge may have won the race.
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(nl_err(&format!("creating bridge {name}"), e)),
                }
                self.index_of(name)
                    .await?
                    .ok_or_else(|| NetError::Netlink(format!("bridge {name} vanished")))?
            }
        };
        self.handle
            .address()
            .add(index, IpAddr::V4(gw), prefix)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(&format!("adding {gw}/{prefix} to {name}"), e))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("bringing {name} up"), e))?;
        Ok(index)
    }

    /// Creates the veth pair of a slot: host end `name`, a port of the bridge, isolated and up;
    /// the peer is created directly inside the slot's namespace as `eth0`.
    pub async fn add_slot_veth(
        &self,
        name: &str,
        bridge: u32,
        netns: &OwnedFd,
    ) -> Result<(), NetError> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(INNER_IF.to_string())
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(name, INNER_IF)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err(&format!("creating veth {name}"), e))?;
        // Port isolation: isolated ports cannot exchange frames with each other, only with the
        // bridge device itself (the gateway).
        let iso = LinkUnspec::new_with_name(name)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                true,
            )]))
            .build();
        self.handle
            .link()
            .set_port(iso)
            .execute()
            .await
            .map_err(|e| nl_err(&format!("isolating bridge port {name}"), e))
    }

    /// Deletes a link by name; a missing link is not an error.
    pub async fn del_link_by_name(&self, name: &str) -> Result<(), NetError> {
        let mut req = self.handle.link().del(0);
        req.message_mut()
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err(&format!("deleting link {name}"), e)),
        }
    }

    /// Names of host links that start with `prefix`.
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>, NetError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("listing links", e))?;
        Ok(links
            .iter()
            .filter_map(link_name)
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }
}

fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_err(&format!("looking up link {name}"), e)),
    }
}

async fn set_up(handle: &Handle, index: u32, what: &str) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| nl_err(&format!("bringing {what} up"), e))
}

/// Inside a slot: `lo` up, `eth0` up with `addr/prefix`, default route via `gw`.
pub(crate) async fn configure_slot_inside(
    handle: &Handle,
    addr: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
) -> Result<(), NetError> {
    let lo = index_of(handle, "lo")
        .await?
        .ok_or_else(|| NetError::Netlink("no lo in slot namespace".into()))?;
    set_up(handle, lo, "lo").await?;
    let eth = index_of(handle, INNER_IF)
        .await?
        .ok_or_else(|| NetError::Netlink(format!("no {INNER_IF} in slot namespace")))?;
    handle
        .address()
        .add(eth, IpAddr::V4(addr), prefix)
        .execute()
        .await
        .map_err(|e| nl_err(&format!("adding {addr}/{prefix}"), e))?;
    set_up(handle, eth, INNER_IF).await?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(eth)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| nl_err(&format!("adding default route via {gw}"), e))
}

/// Makes a bridge with a veth port in the current thread's (throwaway) namespace.
pub(crate) fn probe() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let host = Host::connect().map_err(|e| e.to_string())?;
        let br = host
            .ensure_bridge("spprobe0", Ipv4Addr::new(10, 0, 0, 1), 24)
            .await
            .map_err(|e| e.to_string())?;
        let msg = LinkVeth::new("spprobe1", "spprobe2")
            .controller(br)
            .up()
            .build();
        host.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| format!("veth: {e}"))
    })
}
