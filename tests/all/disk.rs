//! A full disk: a real server whose data directory is a small tmpfs, filled up while it runs.
//! Submits and uploads are refused with 507, `/healthz` says the store cannot write and
//! `/metrics` counts the refusals, what was accepted before is intact, and once there is
//! space again the server takes writes with no restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::remote::{Api, Proc, shared_cache};
use crate::serve::serve_http;
use crate::support::guest_bytes;

/// A tmpfs of `mib` MiB mounted on a temporary directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the tests run as root)"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with one file until a write fails for want of space; the file.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Small writes may still find room in partly used blocks: take those too.
        while file.write_all(&[0u8; 512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn health(api: &Api) -> (u16, String) {
    let r = api
        .http
        .get(format!("{}/healthz", api.url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_keeps_what_was_accepted_and_recovers_by_itself() {
    let disk = SmallDisk::mount(8);
    let data = disk.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(shared_cache().join("compiled"), data.join("cache")).unwrap();
    let (child, url) = serve_http(&data, &["--workers", "1"]);
    let _server = Proc(child);
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let api = Api::new(url, admin.trim().to_owned());
    let upload = |name: &str, guest: &str| {
        api.request(reqwest::Method::PUT, &format!("/v1/tasks/{name}"))
            .header("content-type", "application/wasm")
            .body(guest_bytes(guest))
            .send()
    };
    assert!(upload("echo", "echo").await.unwrap().status().is_success());
    let before = api
        .run_one(json!({"task": "echo", "input": {"kept": 1}}))
        .await;
    assert_eq!(before["state"], "completed", "{before}");

    let filler = disk.fill();
    let big = "x".repeat(900 << 10);
    let jobs: Vec<Value> = (0..10)
        .map(|_| json!({"task": "echo", "input_text": big}))
        .collect();
    let refused = api
        .request(reqwest::Method::POST, "/v1/jobs/batch")
        .json(&json!({ "jobs": jobs }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 507);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    let module = upload("hostile", "hostile").await.unwrap();
    assert_eq!(
        module.status(),
        507,
        "a new module's bytes do not fit either"
    );
    let (status, text) = health(&api).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("disk is full"), "{text}");
    let metrics = api.metrics().await;
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("remotask_store_disk_full_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(counted.is_some_and(|n| n >= 1), "{metrics}");
    // What was accepted before is intact, and readable while the disk is full.
    assert_eq!(api.job(before["id"].as_str().unwrap()).await, before);

    std::fs::remove_file(filler).unwrap();
    let (status, text) = health(&api).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "ok\n"),
        "recovered by itself"
    );
    let after = api
        .run_one(json!({"task": "echo", "input": {"after": 1}}))
        .await;
    assert_eq!(after["output"], json!({"after": 1}));
    assert!(
        upload("hostile", "hostile")
            .await
            .unwrap()
            .status()
            .is_success()
    );
}
