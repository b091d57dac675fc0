//! The command line's help tells the truth: `serve --help` names every
//! listener it opens, `profiles --help` says which commands need a running
//! server and which need it stopped, and `profiles import --help` says
//! what `--profile-type` does to packages.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run smdpplus");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn serve_help_names_every_listener() {
    let h = help(&["serve"]);
    let about = h.split("Usage:").next().unwrap_or_default();
    for l in ["ES9+", "ES2+", "operations", "operator web", "GetBalance"] {
        assert!(about.contains(l), "{l} missing from:\n{about}");
    }
    for flag in [
        "--es9-listen",
        "--es2-listen",
        "--ops-listen",
        "--operator-web-listen",
        "--getbalance-listen",
    ] {
        assert!(h.contains(flag), "{flag} missing from:\n{h}");
    }
}

#[test]
fn profiles_help_says_which_commands_need_the_server_stopped() {
    let h = help(&["profiles"]);
    let about = h.split("Usage:").next().unwrap_or_default();
    assert!(about.contains("running server"), "{about}");
    assert!(
        about.contains("generate and import") && about.contains("stopped"),
        "{about}"
    );
    assert!(
        help(&["profiles", "generate"]).contains("stopped server"),
        "generate"
    );
    let import = help(&["profiles", "import"]);
    assert!(import.contains("stopped server"), "{import}");
    assert!(
        import.contains("overriding its ProfileHeader's profileType"),
        "{import}"
    );
}
