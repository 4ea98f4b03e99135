//! The `tollgate` binary as an operator uses it: `config check` on every product example
//! and on broken files, `migrate`, and `serve` stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn tollgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env("TOLLGATE_CONFIG_DIR", config_dir())
        .env("TOLLGATE_ENV", "test")
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("TOLLGATE__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn check(files: &[&Path]) -> Output {
    let mut cmd = tollgate();
    for file in files {
        cmd.arg("--config").arg(file);
    }
    cmd.args(["config", "check"])
        .output()
        .expect("run tollgate")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes a product file: the default catalog with `edit` applied to its text.
fn broken_catalog(dir: &tempfile::TempDir, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let default = std::fs::read_to_string(config_dir().join("default.toml")).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, edit(default)).unwrap();
    path
}

#[test]
fn the_default_configuration_checks() {
    let out = check(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("configuration OK"));
}

#[test]
fn every_seed_products_example_checks() {
    let examples = config_dir().join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let out = check(&[&path]);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        // The example's own catalog is used, not the default one.
        assert!(
            stderr(&out).contains(&format!("catalog: {}", path.display())),
            "{}",
            stderr(&out)
        );
        seen.push(path.file_stem().unwrap().to_string_lossy().into_owned());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "audio-studio",
            "flirt-studio",
            "framium",
            "pain-tracker",
            "studiox"
        ]
    );
}

#[test]
fn an_unknown_plan_in_a_pack_is_named_with_its_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = broken_catalog(&dir, "bad.toml", |text| {
        text.replace(
            "credits = 5000\nprice",
            "credits = 5000\nplans = [\"gold\"]\nprice",
        )
    });
    let out = check(&[&file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: catalog.packs.small.plans[0]: unknown plan `gold`",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn a_negative_price_is_named_with_its_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = broken_catalog(&dir, "negative.toml", |text| {
        text.replace(
            "prices.month = { amount = \"19.00\" }",
            "prices.month = { amount = \"-19.00\" }",
        )
    });
    let out = check(&[&file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("catalog.plans.pro.prices.month.amount: must not be negative"),
        "{err}"
    );
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn several_problems_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = broken_catalog(&dir, "many.toml", |text| {
        text.replace("default_plan = \"free\"", "default_plan = \"gratis\"")
            .replace("short_chat = 5", "short_chat = 0")
    });
    let err = stderr(&check(&[&file]));
    assert!(
        err.contains("catalog.default_plan: unknown plan `gratis`"),
        "{err}"
    );
    assert!(err.contains("catalog.actions.short_chat"), "{err}");
    assert!(err.contains("2 configuration error(s)"), "{err}");
}

#[test]
fn a_float_price_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = broken_catalog(&dir, "float.toml", |text| {
        text.replace("amount = \"5.00\"", "amount = 5.0")
    });
    let out = check(&[&file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("float"), "{}", stderr(&out));
}

#[test]
fn malformed_toml_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[server]\nport = \n").unwrap();
    let err = stderr(&check(&[&file]));
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_misspelt_setting_is_named_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[server]\nprot = 9000\n").unwrap();
    let out = check(&[&file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("prot"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn environment_variables_override_files_and_are_named_when_wrong() {
    let out = tollgate()
        .env("TOLLGATE__SERVER__PORT", "not-a-port")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("environment: server.port"), "{err}");
}

#[test]
fn a_missing_extra_file_is_an_error() {
    let out = check(&[Path::new("/nonexistent/tollgate.toml")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/tollgate.toml: cannot read"));
}

#[test]
fn migrate_says_plainly_that_there_is_no_store_yet() {
    let out = tollgate().arg("migrate").output().unwrap();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("no database store yet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_answers_health_and_stops_gracefully_on_sigterm() {
    let mut child = tollgate()
        .env("TOLLGATE__LOG__LEVEL", "info")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if event["message"] == "tollgate listening" {
            break event["address"].as_str().unwrap().to_owned();
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let health: serde_json::Value = runtime.block_on(async {
        reqwest::get(format!("http://{address}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(health["status"], "ok");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}; logs: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("server stopped")),
        "{rest:?}"
    );
    // The port is released.
    std::thread::sleep(Duration::from_millis(50));
    assert!(std::net::TcpStream::connect(&address).is_err());
}

#[test]
fn a_secret_in_a_file_is_refused_without_repeating_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leaky.toml");
    std::fs::write(
        &file,
        "[payments]\nwebhook_secret = \"whsec_do_not_print_me\"\n",
    )
    .unwrap();
    let out = check(&[&file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("payments.webhook_secret: secrets are read only from the environment"),
        "{err}"
    );
    assert!(err.contains("TOLLGATE__PAYMENTS__WEBHOOK_SECRET"), "{err}");
    assert!(
        !err.contains("whsec_do_not_print_me"),
        "the secret was echoed: {err}"
    );
}
