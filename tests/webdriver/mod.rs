//! A small WebDriver client (the W3C protocol: JSON over HTTP) for driving a
//! headless Chromium through `chromedriver` in the browser test.
//!
//! [`Browser::start`] runs `chromedriver --port=P` in a process group of its own,
//! waits (bounded) for its `/status` to say ready and opens a session; dropping the
//! [`Browser`] deletes the session and SIGKILLs that process group, so neither the
//! driver nor a browser it started outlives the test, even when the test panics.
//! Every call has a timeout. Only what the test needs is here: navigate, find by CSS
//! selector, type, click, read text and properties, run a script, resize, screenshot.

#![allow(dead_code)] // not every test file uses every call

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver may take to listen and say ready.
const DRIVER_READY_MAX: Duration = Duration::from_secs(15);

/// How long starting the browser (new session) may take on a busy machine.
const NEW_SESSION_MAX: Duration = Duration::from_secs(60);

/// Any other command: a page load or a screenshot is well under this.
const COMMAND_MAX: Duration = Duration::from_secs(30);

/// Chromium's switches: headless, and nothing that reaches out to the network or
/// depends on a desktop, /dev/shm size or a GPU.
const CHROMIUM_ARGS: [&str; 7] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--no-first-run",
    "--window-size=1280,900",
];

/// A failed WebDriver call: what was asked, and what the driver or the socket said.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A reference to an element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

/// The programs a session needs; both are found before anything starts.
pub struct Programs {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
}

impl Programs {
    /// `chromedriver` from PATH and `chromium` at /usr/bin/chromium or on PATH;
    /// None if either is missing.
    pub fn find() -> Option<Programs> {
        let chromium = Some(PathBuf::from("/usr/bin/chromium"))
            .filter(|p| p.is_file())
            .or_else(|| on_path("chromium"))?;
        Some(Programs {
            chromedriver: on_path("chromedriver")?,
            chromium,
        })
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A chromedriver process with one open session.
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:P/session/ID`, the prefix of every session command.
    session_url: String,
    agent: ureq::Agent,
    /// chromedriver's and Chromium's TMPDIR (their profile and singleton
    /// socket dirs), removed after they are killed: left in /tmp they piled
    /// up, a dozen per test run.
    _tmp: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on `port` (its output goes to `log`) and opens a
    /// headless Chromium session.
    pub fn start(programs: &Programs, port: u16, log: &Path) -> Result<Browser> {
        Browser::start_with(programs, port, log, true)
    }

    /// Like [`Browser::start`], with pages' JavaScript on or off (off: as a
    /// text browser or a locked-down one reads the page; WebDriver's own
    /// commands still work).
    pub fn start_with(
        programs: &Programs,
        port: u16,
        log: &Path,
        javascript: bool,
    ) -> Result<Browser> {
        let out = std::fs::File::create(log)
            .map_err(|e| Error(format!("create {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| Error(e.to_string()))?;
        let tmp = tempfile::tempdir().map_err(|e| Error(format!("temp dir: {e}")))?;
        let driver = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&programs.chromedriver)
                .arg(format!("--port={port}"))
                .env("TMPDIR", tmp.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Its own group, so that drop can kill the browsers it starts too.
                .process_group(0)
                .spawn()
                .map_err(|e| Error(format!("start {}: {e}", programs.chromedriver.display())))?
        };
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(2)))
                .http_status_as_error(false)
                .build(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            session_url: String::new(),
            agent,
            _tmp: tmp,
        };
        browser.wait_ready(&base)?;
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": programs.chromium.display().to_string(),
                    "args": CHROMIUM_ARGS,
                    "prefs": {
                        // 1 allows pages' scripts, 2 blocks them.
                        "profile.managed_default_content_settings.javascript":
                            if javascript { 1 } else { 2 },
                    },
                },
            }}
        });
        let value = browser.request(
            "POST",
            &format!("{base}/session"),
            Some(capabilities),
            NEW_SESSION_MAX,
        )?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| Error(format!("new session: no sessionId in {value}")))?;
        browser.session_url = format!("{base}/session/{id}");
        Ok(browser)
    }

    /// Polls chromedriver's `/status` until it says ready, within [`DRIVER_READY_MAX`].
    fn wait_ready(&mut self, base: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let url = format!("{base}/status");
            if let Ok(v) = self.request("GET", &url, None, Duration::from_secs(2)) {
                if v["ready"] == json!(true) {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(Error(format!("chromedriver exited at start: {status}")));
            }
            if start.elapsed() > DRIVER_READY_MAX {
                return Err(Error(format!(
                    "chromedriver not ready within {DRIVER_READY_MAX:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command: the `value` of its answer, or its error.
    fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Value> {
        let what = format!("{method} {url}");
        let fail = |e: String| Error(format!("{what}: {e}"));
        let answer = match (method, body) {
            ("GET", _) => self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(limit))
                .build()
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(url)
                .config()
                .timeout_global(Some(limit))
                .build()
                .call(),
            (_, body) => self
                .agent
                .post(url)
                .config()
                .timeout_global(Some(limit))
                .build()
                .header("Content-Type", "application/json; charset=utf-8")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut response = answer.map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024) // screenshots are large
            .read_to_string()
            .map_err(|e| fail(e.to_string()))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("{e} in {text:.200}")))?;
        let value = json.get("value").cloned().unwrap_or(Value::Null);
        if status == 200 {
            Ok(value)
        } else {
            Err(fail(format!(
                "{status} {}: {}",
                value["error"], value["message"]
            )))
        }
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.session_url);
        self.request(method, &url, body, COMMAND_MAX)
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The first element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> Result<Element> {
        let body = json!({ "using": "css selector", "value": selector });
        let value = self.command("POST", "/element", Some(body))?;
        value[ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_string()))
            .ok_or_else(|| Error(format!("find {selector}: no element in {value}")))
    }

    /// The rendered text of an element, as a user sees it.
    pub fn text(&self, element: &Element) -> Result<String> {
        let value = self.command("GET", &format!("/element/{}/text", element.0), None)?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// A DOM property, such as a textarea's `value`.
    pub fn property(&self, element: &Element, name: &str) -> Result<Value> {
        self.command(
            "GET",
            &format!("/element/{}/property/{name}", element.0),
            None,
        )
    }

    /// Empties an editable element.
    pub fn clear(&self, element: &Element) -> Result<()> {
        self.command("POST", &format!("/element/{}/clear", element.0), None)
            .map(drop)
    }

    /// Types `text` into an element, as key presses.
    pub fn send_keys(&self, element: &Element, text: &str) -> Result<()> {
        let body = json!({ "text": text });
        self.command("POST", &format!("/element/{}/value", element.0), Some(body))
            .map(drop)
    }

    pub fn click(&self, element: &Element) -> Result<()> {
        self.command("POST", &format!("/element/{}/click", element.0), None)
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        let body = json!({ "script": script, "args": args });
        self.command("POST", "/execute/sync", Some(body))
    }

    /// Resizes the window (in headless Chromium, the viewport).
    pub fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        let body = json!({ "width": width, "height": height });
        self.command("POST", "/window/rect", Some(body)).map(drop)
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let value = self.command("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .map_err(|e| Error(format!("screenshot: {e}")))?;
        std::fs::write(path, png).map_err(|e| Error(format!("write {}: {e}", path.display())))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session_url.is_empty() {
            let _ = self.request("DELETE", &self.session_url, None, Duration::from_secs(5));
        }
        if let Ok(pid) = libc::pid_t::try_from(self.driver.id()) {
            // SAFETY: kill(2) takes plain integers; the group is the one spawned above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
