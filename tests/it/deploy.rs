//! The deployment files under `deploy/`: no Docker engine or cluster runs
//! here, so each file is checked by the tool its world uses to check it
//! (kubernetes-validate with the schemas of a pinned Kubernetes release,
//! hadolint, promtool, amtool) and against metamcp itself: every
//! `META_MCP_*` name is a setting metamcp reads and every value loads, every
//! metric the alerts and the dashboard use is one a running gateway exports,
//! and every file a compose service or the image build needs exists.
//!
//! YAML is read by the checkers' Python (PyYAML, installed with them) and
//! handed over as JSON, so the crate takes no YAML parser for tests alone;
//! the checks that need no YAML run without the tools.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use crate::common::{self, Gateway, Options};

/// The Kubernetes release the manifests are validated against: the oldest
/// one still supported upstream when this was written, so the manifests use
/// nothing newer clusters alone know.
const KUBERNETES_VERSION: &str = "1.33.0";

/// hadolint rules the Dockerfile may switch off (with `# hadolint
/// ignore=...` right above the line), and why. Any other finding fails.
const HADOLINT_IGNORES: &[(&str, &str)] = &[(
    "DL3008",
    "apt package versions are not pinned: the base image tag pins the Debian release, and its \
     point releases replace package versions, so a pinned version would break the build once it \
     leaves the mirror",
)];

/// Metrics the alert rules and the dashboard use that metamcp does not
/// export yet, with the reason. Checked both ways: a name here that metamcp
/// starts exporting fails this test until it is removed from the list.
const PENDING_METRICS: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a checker; returns (success, stdout + stderr).
fn run(program: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every document of a YAML file, as JSON (through the checkers' PyYAML).
fn yaml_docs(python: &Path, path: &Path) -> Vec<Value> {
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} is not valid YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

fn yaml(python: &Path, path: &Path) -> Value {
    let mut docs = yaml_docs(python, path);
    assert_eq!(docs.len(), 1, "{} holds one document", path.display());
    docs.remove(0)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The `META_MCP_*` names a text mentions.
fn setting_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("META_MCP_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('_');
        // `META_MCP_*` in prose names the family, not a setting.
        if name != "META_MCP" {
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The `metamcp_*` metric names a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("metamcp_") {
        let start = at + found;
        // Part of a longer identifier (e.g. `x_metamcp_`) is not a metric.
        let standalone =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(text.len(), |e| start + e);
        if standalone {
            names.insert(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// The README's "Deploying" section.
fn readme_deploying() -> String {
    let readme = read(&repo().join("README.md"));
    let start = readme
        .find("\n## Deploying")
        .expect("README has a \"Deploying\" section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 4);
    rest[..end].to_owned()
}

// ------------------------------------------------------------------ settings

#[test]
fn every_setting_named_in_deploy_files_is_one_metamcp_reads() {
    let known: BTreeSet<&str> = metamcp::config::ENV_VARS.iter().copied().collect();
    let mut sources: Vec<(String, String)> = files_under(&deploy())
        .into_iter()
        .map(|p| (p.display().to_string(), read(&p)))
        .collect();
    sources.push(("README.md, Deploying".into(), readme_deploying()));
    let mut seen = BTreeSet::new();
    for (name, text) in &sources {
        for setting in setting_names(text) {
            assert!(
                known.contains(setting.as_str()),
                "{name} uses {setting}, which metamcp does not read (src/config.rs ENV_VARS)"
            );
            seen.insert(setting);
        }
    }
    // Not vacuous: the manifests name the settings a replica cannot do without.
    for needed in [
        "META_MCP_SECRET_KEY",
        "META_MCP_ENCRYPTION_KEY",
        "META_MCP_DATABASE_URL",
        "META_MCP_REDIS_URL",
        "META_MCP_METRICS_TOKEN",
        "META_MCP_ALLOWED_HOSTS",
    ] {
        assert!(seen.contains(needed), "no deploy file sets {needed}");
    }
    // The scanner itself: a made-up name would be caught.
    assert_eq!(
        setting_names("x META_MCP_NOT_A_SETTING=1, $(META_MCP_PORT), META_MCP_*"),
        BTreeSet::from([
            "META_MCP_NOT_A_SETTING".to_owned(),
            "META_MCP_PORT".to_owned()
        ])
    );
}

/// Loads settings the way `metamcp serve` does, from `env` and `config`.
fn load_settings(
    env: &BTreeMap<String, String>,
    config: &Path,
) -> Result<metamcp::config::Settings, metamcp::config::SettingError> {
    metamcp::config::Settings::load_from(env, Some(config), &|_| None)
}

/// A value of the right shape for each secret the files leave to the
/// operator.
fn sample_secret(name: &str) -> String {
    match name {
        "META_MCP_DATABASE_URL" | "database-url" => {
            "postgresql://metamcp:pw@postgres:5432/metamcp".into()
        }
        "META_MCP_REDIS_URL" | "redis-url" => "redis://redis:6379/0".into(),
        _ => "s".repeat(48),
    }
}

// ------------------------------------------------------------------ Dockerfile

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let text = read(&deploy().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

#[test]
fn dockerfile_builds_from_what_the_build_context_keeps() {
    let instructions = dockerfile_instructions();
    let ignore = read(&repo().join(".dockerignore"));
    let kept: BTreeSet<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        ".dockerignore starts from nothing"
    );
    let mut copied = BTreeSet::new();
    for copy in instructions.iter().filter(|i| i.starts_with("COPY ")) {
        if copy.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(repo().join(source).exists(), "COPY {source}: no such file");
            assert!(
                kept.contains(source),
                "COPY {source}, but .dockerignore keeps it out of the context"
            );
            copied.insert(source.to_owned());
        }
    }
    // What cargo reads to build the binary (src/store includes the
    // migrations at compile time; askama.toml says where the web UI's
    // templates are).
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "askama.toml",
        "src",
        "migrations",
    ] {
        assert!(copied.contains(needed), "the build does not COPY {needed}");
    }
    let build = instructions
        .iter()
        .find(|i| i.contains("cargo build"))
        .expect("a cargo build step");
    for flag in ["--release", "--locked", "--bin metamcp"] {
        assert!(build.contains(flag), "cargo build without {flag}: {build}");
    }
    // The port the image listens on is the one it exposes.
    let env_line = instructions
        .iter()
        .find(|i| i.starts_with("ENV ") && i.contains("META_MCP_PORT="))
        .expect("ENV META_MCP_PORT");
    let port = env_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("META_MCP_PORT="))
        .unwrap();
    assert!(
        instructions.contains(&format!("EXPOSE {port}")),
        "EXPOSE {port} missing"
    );
    assert!(instructions.iter().any(|i| i.starts_with("USER 10001")));
    assert!(
        instructions
            .iter()
            .any(|i| i.starts_with("HEALTHCHECK ") && i.contains("\"metamcp\", \"health\"")),
        "the health check runs `metamcp health`"
    );
}

#[test]
fn dockerfile_passes_hadolint_with_only_documented_ignores() {
    let dockerfile = deploy().join("Dockerfile");
    for line in read(&dockerfile).lines() {
        if let Some(rules) = line.trim().strip_prefix("# hadolint ignore=") {
            for rule in rules.split(',') {
                assert!(
                    HADOLINT_IGNORES.iter().any(|(r, _)| *r == rule.trim()),
                    "the Dockerfile ignores hadolint {rule} without a reason in HADOLINT_IGNORES"
                );
            }
        }
    }
    let Some(hadolint) = common::external(
        "METAMCP_TEST_HADOLINT",
        "deploy::dockerfile_passes_hadolint_with_only_documented_ignores",
    ) else {
        return;
    };
    let (ok, out) = run(
        &hadolint,
        &["--no-color", "--failure-threshold", "info", "Dockerfile"],
        &deploy(),
    );
    assert!(ok, "hadolint finds problems in deploy/Dockerfile:\n{out}");
    // The linter really lints: the same file without its documented
    // ignores is refused.
    let tmp = tempfile::tempdir().unwrap();
    let stripped: String = read(&dockerfile)
        .lines()
        .filter(|l| !l.trim().starts_with("# hadolint ignore="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(tmp.path().join("Dockerfile"), stripped).unwrap();
    let (ok, out) = run(
        &hadolint,
        &["--no-color", "--failure-threshold", "info", "Dockerfile"],
        tmp.path(),
    );
    assert!(!ok && out.contains("DL3008"), "{out}");
}

// ------------------------------------------------------------------ Kubernetes

/// The Kubernetes objects of the manifests, by kind.
fn k8s_objects(python: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in files_under(&deploy().join("kubernetes")) {
        if file.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        for doc in yaml_docs(python, &file) {
            by_kind
                .entry(doc["kind"].as_str().unwrap().to_owned())
                .or_default()
                .push(doc);
        }
    }
    by_kind
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let Some(validate) = common::external(
        "METAMCP_TEST_KUBERNETES_VALIDATE",
        "deploy::kubernetes_manifests_validate_strictly",
    ) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_DEPLOY_PYTHON", "deploy::kubernetes") else {
        return;
    };
    let dir = deploy().join("kubernetes");
    let kustomization = yaml(&python, &dir.join("kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let manifests: Vec<String> = files_under(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    // Everything is applied by `kubectl apply -k` but the example Secret,
    // whose placeholders must never overwrite real keys.
    let expected: BTreeSet<String> = manifests
        .iter()
        .filter(|n| *n != "secret.example.yaml")
        .cloned()
        .collect();
    assert_eq!(listed, expected, "kustomization.yaml resources");

    let mut args = vec!["-k", KUBERNETES_VERSION, "--strict"];
    args.extend(manifests.iter().map(String::as_str));
    let (ok, out) = run(&validate, &args, &dir);
    assert!(ok, "kubernetes-validate:\n{out}");
    assert!(
        !out.contains("ERROR") && !out.contains("WARN"),
        "kubernetes-validate:\n{out}"
    );
    let passed = out.lines().filter(|l| l.contains(" passed ")).count();
    let objects: usize = k8s_objects(&python).values().map(Vec::len).sum();
    assert_eq!(passed, objects, "every object was validated:\n{out}");

    // What `kubectl apply -k` would send, where a kubectl is at hand (the
    // install script has none to offer: Debian ships no kubectl).
    if let Ok(out) = Command::new("kubectl")
        .args(["kustomize", "."])
        .current_dir(&dir)
        .output()
    {
        assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("rendered.yaml"), &out.stdout).unwrap();
        let (ok, text) = run(
            &validate,
            &["-k", KUBERNETES_VERSION, "--strict", "rendered.yaml"],
            tmp.path(),
        );
        assert!(
            ok && !text.contains("ERROR"),
            "rendered kustomization:\n{text}"
        );
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(rendered.contains("namespace: metamcp"));
    } else {
        eprintln!("deploy: no kubectl here; the kustomization was not rendered");
    }

    // Strict means strict: an unknown field is refused.
    let tmp = tempfile::tempdir().unwrap();
    let bad = read(&dir.join("deployment.yaml")).replacen(
        "  revisionHistoryLimit:",
        "  replicaCount: 3\n  revisionHistoryLimit:",
        1,
    );
    std::fs::write(tmp.path().join("bad.yaml"), bad).unwrap();
    let (ok, out) = run(
        &validate,
        &["-k", KUBERNETES_VERSION, "--strict", "bad.yaml"],
        tmp.path(),
    );
    assert!(!ok && out.contains("replicaCount"), "{out}");
}

#[test]
fn kubernetes_objects_fit_together_and_their_settings_load() {
    let Some(python) = common::external(
        "METAMCP_TEST_DEPLOY_PYTHON",
        "deploy::kubernetes_objects_fit_together_and_their_settings_load",
    ) else {
        return;
    };
    let objects = k8s_objects(&python);
    let one = |kind: &str| -> &Value {
        let list = &objects[kind];
        assert_eq!(list.len(), 1, "one {kind}");
        &list[0]
    };
    let deployment = one("Deployment");
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    assert_eq!(
        &deployment["spec"]["selector"]["matchLabels"], pod_labels,
        "the Deployment selects its pods"
    );
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let service = |name: &str| -> &Value {
        objects["Service"]
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("Service {name}"))
    };
    assert_eq!(&service("metamcp")["spec"]["selector"], pod_labels);
    // The headless one, by which Prometheus finds every pod
    // (deploy/prometheus/prometheus-kubernetes.yml).
    let pods = service("metamcp-pods");
    assert_eq!(&pods["spec"]["selector"], pod_labels);
    assert_eq!(pods["spec"]["clusterIP"], "None");
    assert!(
        read(&deploy().join("prometheus/prometheus-kubernetes.yml"))
            .contains("metamcp-pods.metamcp.svc.cluster.local"),
        "Prometheus looks the pods up by the headless Service"
    );
    assert_eq!(
        &one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        pod_labels
    );
    let hpa = one("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);

    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!("metamcp:{}", env!("CARGO_PKG_VERSION")),
        "the manifests run this version"
    );
    // Probes on the real health routes, on the port the Service targets.
    let openapi: Value = serde_json::from_str(&read(&repo().join("src/api/openapi.json"))).unwrap();
    assert_eq!(openapi["servers"][0]["url"], "/api/v1");
    for (probe, path) in [
        ("startupProbe", "/api/v1/health/live"),
        ("livenessProbe", "/api/v1/health/live"),
        ("readinessProbe", "/api/v1/health/ready"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
        let route = path.strip_prefix("/api/v1").unwrap();
        assert!(
            openapi["paths"][route]["get"].is_object(),
            "{path} is not a route (src/api/openapi.json)"
        );
    }
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], 8000);
    for name in ["metamcp", "metamcp-pods"] {
        assert_eq!(service(name)["spec"]["ports"][0]["targetPort"], "http");
    }
    // Non-root, read-only root file system, nothing extra.
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 10001);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "the HPA needs CPU requests"
    );
    assert!(c["resources"]["limits"]["memory"].is_string());

    // Every secret reference names a key of the Secret's documented shape,
    // and every key of it is used.
    let secret = one("Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    let keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut used = BTreeSet::new();
    let mut env = BTreeMap::new();
    for var in c["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
            assert_eq!(r["name"], secret_name, "{name}");
            let key = r["key"].as_str().unwrap();
            assert!(
                keys.contains(key),
                "{name} reads key {key}, not in the Secret"
            );
            used.insert(key);
            env.insert(name.to_owned(), sample_secret(key));
        } else if let Some(value) = var["value"].as_str() {
            env.insert(name.to_owned(), value.replace("$(POD_IP)", "10.1.2.3"));
        }
    }
    assert_eq!(used, keys, "every key of the Secret is read");
    // The names of the original README's example, which users carry over.
    assert_eq!(deployment["metadata"]["name"], "metamcp");
    assert_eq!(pod_labels["app"], "metamcp");
    assert_eq!(c["name"], "metamcp");
    assert_eq!(secret_name, "metamcp-secrets");
    let key_of = |var: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .map(|e| e["valueFrom"]["secretKeyRef"]["key"].clone())
    };
    assert_eq!(key_of("META_MCP_SECRET_KEY"), Some(json!("secret-key")));
    // The ConfigMaps: settings (through envFrom) and the config file.
    let configmaps = &objects["ConfigMap"];
    let by_name = |name: &str| -> &Value {
        configmaps
            .iter()
            .find(|m| m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ConfigMap {name}"))
    };
    for from in c["envFrom"].as_array().unwrap() {
        let map = by_name(from["configMapRef"]["name"].as_str().unwrap());
        for (k, v) in map["data"].as_object().unwrap() {
            env.insert(k.clone(), v.as_str().unwrap().to_owned());
        }
    }
    // The config file is mounted where META_MCP_CONFIG says.
    let config_path = env["META_MCP_CONFIG"].clone();
    let (dir, file) = config_path.rsplit_once('/').unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("a volume mounted at META_MCP_CONFIG's folder");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let config_map = by_name(volume["configMap"]["name"].as_str().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join(file);
    std::fs::write(&config, config_map["data"][file].as_str().unwrap()).unwrap();
    // The data directory and /tmp are writable volumes (the root is not).
    for path in ["/var/lib/metamcp", "/tmp"] {
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == path && m["readOnly"] != true),
            "{path} is not writable"
        );
    }
    env.remove("POD_IP");
    let settings = load_settings(&env, &config)
        .unwrap_or_else(|e| panic!("the Deployment's settings do not load: {e}"));
    assert!(settings.database_url.starts_with("postgresql://"));
    // The kubelet's probes and Prometheus come by pod IP.
    let hosts = settings.effective_allowed_hosts();
    for host in ["10.1.2.3", "metamcp", "mcp.example.com", "127.0.0.1"] {
        assert!(hosts.iter().any(|h| h == host), "{host} not in {hosts:?}");
    }
}

// ------------------------------------------------------------------ compose

#[test]
fn compose_file_wires_services_files_and_secrets() {
    let Some(python) = common::external(
        "METAMCP_TEST_DEPLOY_PYTHON",
        "deploy::compose_file_wires_services_files_and_secrets",
    ) else {
        return;
    };
    let dir = deploy();
    let compose = yaml(&python, &dir.join("docker-compose.yml"));
    let services = compose["services"].as_object().unwrap();
    for needed in [
        "metamcp",
        "postgres",
        "redis",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(services.contains_key(needed), "no {needed} service");
    }
    let declared_secrets: BTreeSet<&str> = compose["secrets"]
        .as_object()
        .map(|s| s.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let declared_volumes: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for (name, service) in services {
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: image {image} has no pinned tag"
        );
        if let Some(deps) = service["depends_on"].as_object() {
            for dep in deps.keys() {
                assert!(
                    services.contains_key(dep),
                    "{name} depends on unknown {dep}"
                );
            }
        } else if let Some(deps) = service["depends_on"].as_array() {
            for dep in deps {
                assert!(
                    services.contains_key(dep.as_str().unwrap()),
                    "{name}: {dep}"
                );
            }
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            let source = spec.split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(dir.join(source).exists(), "{name} mounts missing {source}");
            } else {
                assert!(declared_volumes.contains(source), "{name}: volume {source}");
            }
        }
        for secret in service["secrets"].as_array().into_iter().flatten() {
            assert!(declared_secrets.contains(secret.as_str().unwrap()));
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            assert!(
                port.as_str().unwrap().starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond this host"
            );
        }
    }
    let metamcp = &services["metamcp"];
    assert_eq!(
        metamcp["image"],
        format!("metamcp:{}", env!("CARGO_PKG_VERSION"))
    );
    let context = dir.join(metamcp["build"]["context"].as_str().unwrap());
    assert!(
        context
            .join(metamcp["build"]["dockerfile"].as_str().unwrap())
            .is_file()
    );
    assert!(context.join(".dockerignore").is_file());

    // metamcp's environment loads, with the secrets compose takes from
    // deploy/.env filled in.
    let mut env = BTreeMap::new();
    for (k, v) in metamcp["environment"].as_object().unwrap() {
        let mut value = v.as_str().unwrap().to_owned();
        while let Some(start) = value.find("${") {
            let end = start + value[start..].find('}').unwrap();
            let var = value[start + 2..end].split(":?").next().unwrap().to_owned();
            let sample = if var == "POSTGRES_PASSWORD" {
                "pw".to_owned()
            } else {
                sample_secret(&var)
            };
            value.replace_range(start..=end, &sample);
        }
        env.insert(k.clone(), value);
    }
    let mounted = metamcp["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .find(|v| v.split(':').nth(1) == Some(env["META_MCP_CONFIG"].as_str()))
        .expect("the config file is mounted at META_MCP_CONFIG");
    let config = dir.join(mounted.split(':').next().unwrap());
    let settings = load_settings(&env, &config)
        .unwrap_or_else(|e| panic!("the compose settings do not load: {e}"));
    let hosts = settings.effective_allowed_hosts();
    // Prometheus scrapes by service name; the health check by 127.0.0.1.
    for host in ["metamcp", "127.0.0.1", "localhost"] {
        assert!(hosts.iter().any(|h| h == host), "{host} not in {hosts:?}");
    }

    // Prometheus reads its bearer from the secret compose mounts, the one
    // made of metamcp's own META_MCP_METRICS_TOKEN.
    let prometheus = yaml(&python, &dir.join("prometheus/prometheus.yml"));
    let job = prometheus["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "metamcp")
        .expect("a metamcp job");
    let secret = services["prometheus"]["secrets"][0].as_str().unwrap();
    assert_eq!(
        job["authorization"]["credentials_file"],
        format!("/run/secrets/{secret}")
    );
    assert_eq!(
        compose["secrets"][secret]["environment"], "META_MCP_METRICS_TOKEN",
        "the scrape token is metamcp's metrics token"
    );
    assert_eq!(job["static_configs"][0]["targets"][0], "metamcp:8000");

    // Grafana: the provisioned provider reads the folder compose mounts the
    // dashboards at, and the dashboards use a provisioned data source type.
    let provider = yaml(
        &python,
        &dir.join("grafana/provisioning/dashboards/metamcp.yml"),
    );
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        services["grafana"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str().unwrap() == format!("./grafana/dashboards:{path}:ro")),
        "grafana mounts the dashboards at {path}"
    );
    let datasources = yaml(
        &python,
        &dir.join("grafana/provisioning/datasources/prometheus.yml"),
    );
    assert_eq!(datasources["datasources"][0]["type"], "prometheus");
    assert_eq!(
        datasources["datasources"][0]["url"],
        "http://prometheus:9090"
    );
}

// ------------------------------------------------------------------ Prometheus

#[test]
fn prometheus_config_rules_and_alertmanager_config_check() {
    let Some(promtool) = common::external(
        "METAMCP_TEST_PROMTOOL",
        "deploy::prometheus_config_rules_and_alertmanager_config_check",
    ) else {
        return;
    };
    let Some(amtool) = common::external("METAMCP_TEST_AMTOOL", "deploy::alertmanager") else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_DEPLOY_PYTHON", "deploy::prometheus") else {
        return;
    };
    let dir = deploy().join("prometheus");
    // promtool insists that the token file exists; in the container it is a
    // mounted secret, so check copies whose only change is that path.
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "t".repeat(32)).unwrap();
    std::fs::copy(dir.join("alerts.yml"), tmp.path().join("alerts.yml")).unwrap();
    for (file, secret_path) in [
        ("prometheus.yml", "/run/secrets/metamcp_metrics_token"),
        (
            "prometheus-kubernetes.yml",
            "/etc/prometheus/secrets/metamcp/metrics-token",
        ),
    ] {
        let config = read(&dir.join(file));
        let parsed = yaml(&python, &dir.join(file));
        assert_eq!(
            parsed["scrape_configs"][0]["authorization"]["credentials_file"], secret_path,
            "{file}"
        );
        std::fs::write(
            tmp.path().join(file),
            config.replace(secret_path, token.to_str().unwrap()),
        )
        .unwrap();
        let (ok, out) = run(&promtool, &["check", "config", file], tmp.path());
        assert!(
            ok && out.contains("SUCCESS"),
            "promtool check config {file}:\n{out}"
        );
    }
    let (ok, out) = run(&promtool, &["check", "rules", "alerts.yml"], &dir);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run(&promtool, &["test", "rules", "alerts.test.yml"], &dir);
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");
    let (ok, out) = run(
        &amtool,
        &["check-config", "alertmanager.yml"],
        &deploy().join("alertmanager"),
    );
    assert!(ok && out.contains("SUCCESS"), "amtool check-config:\n{out}");

    // Every alert has a unit test, and the tests name no other alert.
    let rules = yaml(&python, &dir.join("alerts.yml"));
    let alerts: BTreeSet<&str> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let tests = yaml(&python, &dir.join("alerts.test.yml"));
    let tested: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|t| !t["exp_alerts"].as_array().unwrap().is_empty())
        .map(|t| t["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(alerts, tested, "alerts with a test that makes them fire");
    for needed in [
        "MetamcpUpstreamDown",
        "MetamcpCircuitBreakerOpen",
        "MetamcpToolErrorRate",
        "MetamcpAuditRecordsDropped",
    ] {
        assert!(alerts.contains(needed), "no {needed} alert");
    }
}

// ------------------------------------------------------------------ metrics

/// The sample names an exposition carries, and those its `# TYPE` lines
/// allow (each family with the suffixes of its type).
fn exported_names(exposition: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut sampled = BTreeSet::new();
    let mut declared = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["_sum", "_count", "_created", ""],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                declared.insert(format!("{family}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            sampled.insert(line[..end].to_owned());
        }
    }
    (sampled, declared)
}

#[tokio::test]
async fn alert_and_dashboard_metrics_are_exported_by_a_running_gateway() {
    let dashboard_text = read(&deploy().join("grafana/dashboards/metamcp.json"));
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    // Every panel query, and the names in them.
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel id {} twice",
            panel["id"]
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24 && grid["h"].as_u64().unwrap() > 0, "{grid}");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            let expr = target["expr"].as_str().unwrap();
            // The replica selector at the top applies to every query.
            assert!(expr.contains(r#"instance=~"$instance""#), "{expr}");
            exprs.push(expr.to_owned());
        }
    }
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(variable("instance")["datasource"]["uid"], "${datasource}");
    exprs.push(
        variable("instance")["definition"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    assert!(exprs.len() >= 20, "the dashboard has its queries");
    let mut used: BTreeMap<String, &str> = BTreeMap::new();
    for name in exprs.iter().flat_map(|e| metric_names(e)) {
        used.insert(name, "the Grafana dashboard");
    }
    for file in ["alerts.yml", "alerts.test.yml"] {
        for name in metric_names(&read(&deploy().join("prometheus").join(file))) {
            used.entry(name).or_insert(file);
        }
    }
    assert!(used.contains_key("metamcp_tool_calls_total"), "{used:?}");

    // Traffic that makes every family appear (prometheus-client shows a
    // family only once it has a series): logins and an API key (the
    // harness), an MCP request, tool calls of each outcome, a search twice
    // (a miss, then a hit of the search cache), a rate-limit refusal, and a
    // protocol error that opens the breaker (threshold 1).
    let m = common::marker("fx-deploy");
    let mut fx = common::fixture_stdio(&m);
    fx["circuit_breaker"] =
        json!({"failure_threshold": 1, "recovery_timeout": 60, "monitor_interval": 60});
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fx}}))
            .env("META_MCP_RATE_LIMIT_TOOL", "2/minute")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let listed = common::mcp_request(&gw.mcp_url(), "tools/list", json!({})).await;
    assert!(listed["result"]["tools"].is_array(), "{listed}");
    assert_eq!(gw.execute("fx__echo", json!({"message": "1"})).await.0, 200);
    assert_eq!(gw.execute("fx__fail", json!({})).await.0, 200);
    for _ in 0..2 {
        let search = "/api/v1/tools/search?q=echo&search_type=keyword";
        assert_eq!(gw.get(search).await.0, 200);
    }
    assert_eq!(gw.execute("fx__echo", json!({"message": "2"})).await.0, 200);
    let (code, body) = gw.execute("fx__echo", json!({"message": "3"})).await;
    assert_eq!(code, 429, "the third call in a minute is refused: {body}");
    assert_eq!(gw.execute("fx__protocol_error", json!({})).await.0, 502);
    let (_, server) = gw.get("/api/v1/servers/fx").await;
    assert_eq!(server["breaker"], "open", "{server}");
    let r = gw.client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let exposition = r.text().await.unwrap();
    let (sampled, declared) = exported_names(&exposition);
    assert!(sampled.contains("metamcp_tool_calls_total"), "{exposition}");

    let pending: BTreeMap<&str, &str> = PENDING_METRICS.iter().copied().collect();
    for (name, file) in &used {
        assert!(
            sampled.contains(name) || pending.contains_key(name.as_str()),
            "{file} uses {name}, which metamcp does not export (after the traffic above):\n{exposition}"
        );
    }
    for (name, why) in &pending {
        assert!(
            !declared.contains(*name) && !sampled.contains(*name),
            "metamcp exports {name} now: remove it from PENDING_METRICS ({why})"
        );
        assert!(used.contains_key(*name), "{name} is pending but unused");
    }
}

// ------------------------------------------------------------------ health

fn health_command(args: &[&str], port: Option<u16>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metamcp"));
    cmd.arg("health").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("META_MCP_") {
            cmd.env_remove(k);
        }
    }
    if let Some(port) = port {
        cmd.env("META_MCP_PORT", port.to_string());
    }
    let out = cmd.output().expect("run metamcp health");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn health_command_exit_status_follows_the_probe() {
    let gw = Gateway::start(Options::default().ready()).await;
    let (ok, out) = health_command(&["--url", &gw.base], None);
    assert!(
        ok && out.contains("/api/v1/health/live") && out.contains("alive"),
        "{out}"
    );
    let (ok, out) = health_command(&["--ready"], Some(gw.port));
    assert!(ok && out.contains("/api/v1/health/ready"), "{out}");
    // Any answer but 200 fails the check (here: not a public route).
    let (ok, out) = health_command(&["--url", &gw.url("/elsewhere")], None);
    assert!(!ok && out.contains("401"), "{out}");
    // Nothing listening.
    let closed = common::free_port();
    let (ok, out) = health_command(&[], Some(closed));
    assert!(!ok && out.contains(&format!("127.0.0.1:{closed}")), "{out}");
}
