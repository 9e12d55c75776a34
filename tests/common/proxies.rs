//! Real proxies for the purge tests: varnishd and nginx started on free
//! loopback ports with the configurations shipped in `proxy/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_for(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A server process stopped (with its workers) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ultracache-purge-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// varnishd with the shipped VCL, its backend pointed at `backend`.
pub fn start_varnish(backend: u16, name: &str) -> Option<(Server, u16)> {
    let vcl = std::fs::read_to_string(repo("proxy/varnish/ultracache.vcl")).ok()?;
    let dir = scratch(name);
    let vcl_path = dir.join("ultracache.vcl");
    std::fs::write(
        &vcl_path,
        vcl.replace("\"8000\"", &format!("\"{backend}\"")),
    )
    .ok()?;
    let port = free_port();
    let child = Command::new("varnishd")
        .args(["-F", "-a", &format!("127.0.0.1:{port}"), "-f"])
        .arg(&vcl_path)
        .args(["-n"])
        .arg(dir.join("work"))
        .args(["-s", "malloc,32m", "-T", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    wait_for(port).then_some((server, port))
}

/// nginx with the shipped server block (backend and port replaced) and the
/// cache-purge module.
pub fn start_nginx(backend: u16) -> Option<(Server, u16)> {
    let conf = std::fs::read_to_string(repo("proxy/nginx/ultracache.conf")).ok()?;
    let module = ["/usr/lib/nginx/modules/ngx_http_cache_purge_module.so"]
        .into_iter()
        .find(|m| Path::new(m).exists())?;
    let dir = scratch("nginx");
    let port = free_port();
    let server_block = conf
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{backend}"))
        .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "/var/cache/nginx/ultracache",
            &dir.join("cache").display().to_string(),
        );
    let main = format!(
        "load_module {module};\ndaemon off; worker_processes 1; user root;\n\
         pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log off;\n{server_block}\n}}\n",
        d = dir.display()
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, main).ok()?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    wait_for(port).then_some((server, port))
}

pub fn skip(what: &str) {
    let message = format!("{what}: the purge test cannot run");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: a skipped test is a failed test)");
    }
    eprintln!("\n*** SKIPPED: {message} ***\n");
}

/// GETs `url`: the proxy's verdict (`X-Proxy-Cache`) and the body.
pub async fn fetch(client: &reqwest::Client, url: &str) -> (String, String) {
    let r = client.get(url).send().await.expect("request");
    let proxy = r
        .headers()
        .get("x-proxy-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (proxy, r.text().await.expect("body"))
}
