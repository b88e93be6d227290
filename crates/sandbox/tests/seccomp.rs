//! Real workloads run under the seccomp allow list: interpreters, a compiler and the program
//! it built, version control, archives and shell pipelines, on both start paths. A call the
//! list forgot shows up here as a tool that fails (or, for calls with a libc fallback, works).

mod common;
use common::*;

/// (what, command, expected stdout). Each runs in `/home/user` of a fresh sandbox.
fn workloads() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "python3",
            r#"python3 - <<'PY'
import hashlib, json, multiprocessing, socket, subprocess, threading, sqlite3
pool = multiprocessing.Pool(2)
squares = pool.map(abs, [-1, -2, -3])
pool.close(); pool.join()
t = threading.Thread(target=lambda: None); t.start(); t.join()
srv = socket.create_server(("127.0.0.1", 0)); port = srv.getsockname()[1]
c = socket.create_connection(("127.0.0.1", port)); s, _ = srv.accept(); c.sendall(b"ping")
db = sqlite3.connect(":memory:"); db.execute("create table t(x)"); db.execute("insert into t values (7)")
out = {
    "sha": hashlib.sha256(b"x").hexdigest()[:8],
    "pool": squares,
    "sub": subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout.strip(),
    "tcp": s.recv(4).decode(),
    "lo": any(name == "lo" for _, name in socket.if_nameindex()),
    "addr": socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][1],
    "sql": db.execute("select x from t").fetchone()[0],
}
print(json.dumps(out, sort_keys=True))
PY"#,
            "{\"addr\": 80, \"lo\": true, \"pool\": [1, 2, 3], \"sha\": \"2d711642\", \"sql\": 7, \"sub\": \"hi\", \"tcp\": \"ping\"}\n",
        ),
        (
            "gcc",
            r#"cat > t.c <<'C'
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void *work(void *p) { *(int *)p *= 6; return p; }
int main(void) {
    int v = 7; pthread_t t;
    pthread_create(&t, NULL, work, &v); pthread_join(t, NULL);
    pid_t c = fork(); if (c == 0) _exit(3);
    int st; waitpid(c, &st, 0);
    char *m = malloc(1 << 24); m[1 << 23] = 1;
    printf("%d %d\n", v, WEXITSTATUS(st));
    return 0;
}
C
gcc -O2 -pthread -o t t.c && ./t"#,
            "42 3\n",
        ),
        (
            "node",
            r#"node -e '
const cp = require("child_process"), fs = require("fs"), os = require("os"), zlib = require("zlib");
fs.writeFileSync("n.txt", "node");
const z = zlib.gunzipSync(zlib.gzipSync(fs.readFileSync("n.txt"))).toString();
const sub = cp.execSync("echo sub").toString().trim();
const lo = Object.keys(os.networkInterfaces()).includes("lo");
const { Worker } = require("worker_threads");
new Worker("require(\"worker_threads\").parentPort.postMessage(6*7)", { eval: true })
  .on("message", (m) => setTimeout(() => console.log(z, sub, lo, m), 5));
'"#,
            "node sub true 42\n",
        ),
        (
            "perl",
            r#"perl -MPOSIX -e 'my $p = fork; if (!$p) { exit 5 } waitpid($p, 0); open(my $f, ">", "p.txt") or die; print $f "x" x 3; close $f; print 2**10, " ", $? >> 8, " ", -s "p.txt", "\n"'"#,
            "1024 5 3\n",
        ),
        (
            "git",
            "git init -q repo && cd repo && echo hello > f && git add f \
             && git -c user.name=n -c user.email=n@example.invalid commit -qm first \
             && git log --format=%s && git show HEAD:f",
            "first\nhello\n",
        ),
        (
            "tar",
            "mkdir -p a/b && echo t > a/b/f && tar czf a.tgz a && mkdir x && tar xzf a.tgz -C x \
             && diff -r a x/a && tar tzf a.tgz | sort | tr '\\n' ' '",
            "a/ a/b/ a/b/f ",
        ),
        (
            "pipeline",
            "seq 1 1000 | sort -rn | awk '{s += $1} END {print s}' | tee s.txt | wc -c \
             && sed -n 1p s.txt | cut -c1-3 && find . -name s.txt | xargs md5sum | cut -c1-8 \
             && printf 'b\\na\\n' | sort | uniq | paste -sd, -",
            "7\n500\n5ae35827\na,b\n",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_tools_work_under_the_filter() {
    on_each_start_path("sc-work", |rt, zygote| async move {
        let sb = start_on_path(&rt, zygote).await;
        let (_, out, _) = sh(&sb, "grep ^Seccomp: /proc/self/status").await;
        assert_eq!(out, "Seccomp:\t2\n");
        for (what, cmd, want) in workloads() {
            let (code, out, err) = sh(&sb, &format!("cd /home/user && {cmd}")).await;
            assert_eq!(
                (code, out.as_str()),
                (Some(0), want),
                "{what} (zygote: {zygote}): {err}"
            );
        }
    })
    .await;
}
