//! The test PKCS#11 token: `SMDPPLUS_TEST_HSM_MODULE` and the other
//! variables `tests/tools/softhsm.sh start` prints (`.ci/run` sets them)
//! name a SoftHSM2 configuration; each test initialises a token of its own
//! in it, so tests do not see each other's keys. Without them the token
//! tests skip with a message, or fail under `SMDPPLUS_HSM_TESTS=require`
//! (set by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The variable naming the PKCS#11 module of the test token.
pub const TEST_HSM_MODULE_ENV: &str = "SMDPPLUS_TEST_HSM_MODULE";

/// A token of one test, on the SoftHSM2 of `SOFTHSM2_CONF`.
pub struct TestToken {
    /// CK_TOKEN_INFO.label.
    pub label: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The file holding the user PIN.
    pub pin_file: PathBuf,
}

// softhsm2-util --free picks the free slot: one at a time.
static INIT: Mutex<()> = Mutex::new(());

/// Initialises a token labelled `label` in the free slot.
fn init(label: &str, pin_file: &Path) {
    let so_pin_file = var("SMDPPLUS_TEST_HSM_SO_PIN_FILE").expect("SMDPPLUS_TEST_HSM_SO_PIN_FILE");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_owned()
    };
    // The PINs are arguments here: softhsm2-util takes them no other
    // way, and this token is a test's.
    // Another process of the run (a server's SoftHSM2 library, `keys
    // hsm-import`) may be writing the token directory: a second try.
    let mut out = None;
    for attempt in 0..3 {
        let o = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin"])
            .arg(read(pin_file))
            .arg("--so-pin")
            .arg(read(Path::new(&so_pin_file)))
            .output()
            .expect("softhsm2-util (apt-get install softhsm2)");
        let done = o.status.success();
        out = Some(o);
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200 * (attempt + 1)));
    }
    let out = out.expect("an attempt");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn delete(label: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--delete-token", "--token", label])
        .output()
        .expect("softhsm2-util");
    assert!(
        out.status.success(),
        "softhsm2-util --delete-token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The repository's SGP.26 certificates.
pub fn sgp26(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs/sgp26")
        .join(path)
}

impl TestToken {
    /// A fresh, empty token for `test`, or `None` (the test skips) when no
    /// test SoftHSM2 is configured.
    pub fn create(test: &str) -> Option<TestToken> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let Some(module) = var(TEST_HSM_MODULE_ENV) else {
            assert!(
                std::env::var("SMDPPLUS_HSM_TESTS").as_deref() != Ok("require"),
                "{test}: {TEST_HSM_MODULE_ENV} is required (SMDPPLUS_HSM_TESTS=require)"
            );
            eprintln!(
                "SKIP {test}: {TEST_HSM_MODULE_ENV} is not set \
                 (eval \"$(tests/tools/softhsm.sh start DIR)\" sets it)"
            );
            return None;
        };
        let pin_file =
            PathBuf::from(var("SMDPPLUS_TEST_HSM_PIN_FILE").expect("SMDPPLUS_TEST_HSM_PIN_FILE"));
        assert!(var("SOFTHSM2_CONF").is_some(), "SOFTHSM2_CONF is not set");
        // A token label is at most 32 bytes.
        let label = format!(
            "t{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            test.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect::<String>()
        );
        {
            let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
            init(&label, &pin_file);
        }
        Some(TestToken {
            label,
            module: PathBuf::from(module),
            pin_file,
        })
    }

    /// Deletes the token and initialises an empty one under the same
    /// label (an HSM replaced or reset).
    pub fn replace(&self) {
        let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
        delete(&self.label);
        init(&self.label, &self.pin_file);
    }

    /// Deletes the token (an HSM gone). Serialised with every other token
    /// change of the tests: softhsm2-util enumerating the token directory
    /// fails when a token disappears in the middle.
    pub fn delete(&self) {
        let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
        delete(&self.label);
    }

    /// The `[hsm]` section for this token.
    pub fn hsm_section(&self) -> String {
        format!(
            "[hsm]\nmodule = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\n",
            self.module.display(),
            self.label,
            self.pin_file.display()
        )
    }

    /// `[hsm]` and two `[[credentials]]` (NIST and brainpool) whose keys
    /// are the SGP.26 keys on this token (see [`TestToken::import_sgp26`]),
    /// and whose certificates are copies in `dir`: no key file anywhere.
    pub fn credentials_config(&self, dir: &Path) -> String {
        std::fs::create_dir_all(dir).expect("cert dir");
        let mut out = self.hsm_section();
        for (c, tag) in [("NIST", "nist"), ("BRP", "brp")] {
            let auth = dir.join(format!("dpauth-{tag}.der"));
            let pb = dir.join(format!("dppb-{tag}.der"));
            std::fs::copy(
                sgp26(&format!("DPauth/CERT_S_SM_DPauth_ECDSA_{c}.der")),
                &auth,
            )
            .expect("copy DPauth");
            std::fs::copy(sgp26(&format!("DPpb/CERT_S_SM_DPpb_ECDSA_{c}.der")), &pb)
                .expect("copy DPpb");
            out.push_str(&format!(
                "\n[[credentials]]\ndpauth_cert = \"{}\"\ndpauth_key = \"pkcs11:object=dpauth-{tag}\"\ndppb_cert = \"{}\"\ndppb_key = \"pkcs11:object=dppb-{tag}\"\n",
                auth.display(),
                pb.display()
            ));
        }
        out
    }

    /// Runs `smdpplus keys <args> --config <dir>/hsm.toml` with `config`
    /// as that file: (exit code, stdout, stderr).
    pub fn keys(&self, dir: &Path, config: &str, args: &[&str]) -> (i32, String, String) {
        std::fs::create_dir_all(dir).expect("dir");
        let file = dir.join("hsm.toml");
        std::fs::write(&file, config).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(&file)
            .env_remove("SMDPPLUS_HSM_PIN")
            .output()
            .expect("smdpplus keys");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Puts the four SGP.26 TEST SM-DP+ keys on the token with
    /// `smdpplus keys hsm-import`.
    pub fn import_sgp26(&self, dir: &Path) {
        let (code, out, err) = self.keys(dir, &self.hsm_section(), &["hsm-import"]);
        assert_eq!(code, 0, "hsm-import: {out}{err}");
        assert_eq!(out.matches("imported ").count(), 4, "{out}");
    }
}
