//! The NoteRaft page in a real headless Chromium, driven over WebDriver: a note
//! written on a follower's page shows on another node's page, and a SIGKILL of the
//! leader shows on the page as a new leader within 2 s. Screenshots at 1280 and
//! 390 px wide are left in `target/screenshots/` for people to look at.
//!
//! Needs `chromium` and `chromedriver` (`make browser-deps` installs them); without
//! them the test fails saying so, rather than passing without having run.

mod support;
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{exclusive, get, wait_for, Cluster, Options};
use webdriver::{Browser, Programs};

/// The issue's bound: the page shows the new leader within 2 s of the old one's death.
const NEW_LEADER_SHOWN_MAX: Duration = Duration::from_secs(2);

/// What the page must have rendered before the test trusts it: every node's row
/// with its up/down known, every server's row, and the leader.
const RENDERED: &str = r##"
    const rows = [...document.querySelectorAll("#nodes tbody tr")];
    return {
        leader: document.getElementById("leader").textContent,
        title: document.title,
        up: rows.map(r => r.cells[4].textContent),
        servers: document.querySelectorAll("#servers tbody tr:not([hidden])").length,
    };
"##;

#[test]
fn page_saves_a_note_from_a_follower_and_shows_a_new_leader_within_2s() {
    let Some(programs) = Programs::find() else {
        panic!("chromedriver or chromium is not installed: run `make browser-deps`");
    };
    let _guard = exclusive();
    let mut cluster = Cluster::start(Options::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    cluster.wait_for_servers(&[true; 3], Duration::from_secs(15));
    let shots = screenshot_dir();
    let port = support::free_port();
    let browser = Browser::start(&programs, port, &shots.join("chromedriver.log"))
        .unwrap_or_else(|e| panic!("start the browser: {e}"));

    let text = note_written_on_one_page_shows_on_another(&browser, &cluster, leader);
    let other = (leader + 2) % 5; // the page now open, a follower until the kill
    charts_move_under_load(&browser, &cluster, other);
    let old = cluster.ids[leader].clone();
    new_leader_shown_within_2s(&browser, &mut cluster, leader);
    let events = browser.find("#events").expect("#events");
    wait_for("the election in the events", Duration::from_secs(5), || {
        let said = browser.text(&events).ok()?;
        said.contains("Election: ").then_some(())
    });

    // A write from this page after the failover, with Ctrl+Enter this time.
    let again = format!("{text}\nand again after {old} died");
    type_note(&browser, &again);
    let note = browser.find("#note").expect("#note");
    let keys = format!("{CONTROL}{ENTER}{CONTROL}");
    browser.send_keys(&note, &keys).expect("Ctrl+Enter");
    println!("{}", wait_for_saved(&browser, Duration::from_secs(15)));
    assert_note(&cluster, other, &again);

    for (width, name) in [(1280, "noteraft-1280.png"), (390, "noteraft-390.png")] {
        let path = shots.join(name);
        screenshot_whole_page(&browser, width, &path);
        println!("screenshot: {}", path.display());
    }

    no_leader_said_and_save_retried_until_one_is_back(&browser, &mut cluster, other, &text);
    page_fails_over_while_its_node_is_down_and_comes_back(&browser, &mut cluster, other, &text);
}

/// SIGKILLs the page's own node: the page must go on through another node
/// (naming it), save through it, and come back to its own node once it is up.
fn page_fails_over_while_its_node_is_down_and_comes_back(
    browser: &Browser,
    cluster: &mut Cluster,
    page_node: usize,
    text: &str,
) {
    let own = cluster.ids[page_node].clone();
    let this_node = browser.find("#this-node").expect("#this-node");
    cluster.kill_node(page_node);
    let through = wait_for(
        "the page to fail over to another node",
        Duration::from_secs(10),
        || {
            let shown = browser.text(&this_node).ok()?;
            let prefix = format!("{own} (down), through ");
            shown.strip_prefix(&prefix).map(str::to_string)
        },
    );
    let banner = browser.find("#banner").expect("#banner");
    let said = browser.text(&banner).expect("#banner");
    assert!(
        said.contains(&format!("reads and saves through node {through}")),
        "{said}"
    );
    let path = screenshot_dir().join("noteraft-failover-1280.png");
    screenshot_whole_page(browser, 1280, &path);
    println!("screenshot: {}", path.display());

    let through_other = format!("{text}\nsaved through {through} while {own} was down");
    type_note(browser, &through_other);
    browser
        .click(&browser.find("#save").expect("#save"))
        .expect("click Save");
    let said = wait_for_saved(browser, Duration::from_secs(15));
    assert!(
        said.ends_with(&format!(" through node {through}.")),
        "{said}"
    );
    let reader = cluster.live()[0];
    assert_note(cluster, reader, &through_other);

    cluster.restart_node(page_node);
    wait_for(
        "the page back on its own node",
        Duration::from_secs(15),
        || (browser.text(&this_node).ok()? == own).then_some(()),
    );
}

/// With JavaScript off, the page still shows the cluster and the note as the
/// node rendered them, and its form saves: POST, 303, the page again with the
/// new note.
#[test]
fn page_without_javascript_shows_the_cluster_and_saves_the_note() {
    let Some(programs) = Programs::find() else {
        panic!("chromedriver or chromium is not installed: run `make browser-deps`");
    };
    let _guard = exclusive();
    let cluster = Cluster::start(Options::default());
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    cluster.wait_for_servers(&[true; 3], Duration::from_secs(15));
    let page_node = (leader + 1) % 5;
    let shots = screenshot_dir();
    let port = support::free_port();
    let browser = Browser::start_with(&programs, port, &shots.join("chromedriver-nojs.log"), false)
        .unwrap_or_else(|e| panic!("start the browser: {e}"));
    browser
        .goto(&cluster.url(page_node, "/"))
        .expect("open a follower's page");
    let text_of = |selector: &str| {
        let element = browser
            .find(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"));
        browser
            .text(&element)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
    };
    let me = &cluster.ids[page_node];
    assert_eq!(&text_of("#this-node"), me);
    // The leader as the node knew it when it rendered (an election may have
    // happened since the test asked): a node of the cluster, and this node's
    // role agrees with it.
    let shown = text_of("#leader");
    assert!(cluster.ids.contains(&shown), "{shown}");
    let role = if &shown == me { "leader" } else { "follower" };
    assert_eq!(text_of("#role"), role);
    // The rows are the server's: without JavaScript nothing replaced them.
    browser
        .find("#servers tbody tr.rendered")
        .expect("the server-rendered rows, as JavaScript is off");
    let servers = text_of("#servers tbody");
    for i in 0..3 {
        assert!(servers.contains(&Cluster::server_id(i)), "{servers}");
    }

    // A leading newline too: HTML drops one right after <textarea>.
    let text = format!(
        "\nsaved without JavaScript, run {} <ok> & done",
        std::process::id()
    );
    type_note(&browser, &text);
    browser
        .click(&browser.find("#save").expect("#save"))
        .expect("click Save");
    // The form's POST answers 303 to /, and the page comes back with the note.
    wait_for(
        "the page back with the note",
        Duration::from_secs(15),
        || {
            let note = browser.find("#note").ok()?;
            (browser.property(&note, "value").ok()? == json!(text)).then_some(())
        },
    );
    assert_note(&cluster, leader, &text);
    let count = format!("{} / 32768 bytes", text.len());
    assert_eq!(text_of("#note-count"), count, "counted by the server");
    let path = shots.join("noteraft-nojs-1280.png");
    browser.set_window_size(1280, 1000).expect("resize");
    browser.screenshot(&path).expect("screenshot");
    println!("screenshot: {}", path.display());
}

/// Types a note on a follower's page and saves it (the follower forwards it to the
/// leader), then opens another follower's page and finds the note in its editor.
/// Returns the note.
fn note_written_on_one_page_shows_on_another(
    browser: &Browser,
    cluster: &Cluster,
    leader: usize,
) -> String {
    let (follower, other) = ((leader + 1) % 5, (leader + 2) % 5);
    let page = cluster.url(follower, "/");
    browser.goto(&page).expect("open the follower's page");
    wait_until_rendered(browser, cluster, follower, leader);
    let text = format!(
        "Written in a browser on node {}, run {}: héllo ✓",
        cluster.ids[follower],
        std::process::id()
    );
    type_note(browser, &text);
    browser
        .click(&browser.find("#save").expect("#save"))
        .expect("click Save");
    println!("{}", wait_for_saved(browser, Duration::from_secs(15)));
    assert_note(cluster, leader, &text);

    browser
        .goto(&cluster.url(other, "/"))
        .expect("open another node's page");
    wait_until_rendered(browser, cluster, other, leader);
    let note = browser.find("#note").expect("#note");
    wait_for(
        "the note on another node's page",
        Duration::from_secs(10),
        || (browser.property(&note, "value").ok()? == json!(text)).then_some(()),
    );
    text
}

/// What the page's charts show: one per server, and the request rate through
/// the page's node, drawn as an SVG polyline (read from the DOM).
const CHARTS: &str = r##"
    return [...document.querySelectorAll("#charts figure")].map(f => ({
        server: f.dataset.server,
        caption: f.querySelector("figcaption .num").textContent,
        points: f.querySelector("polyline.rps").getAttribute("points") || "",
    }));
"##;

/// Sends prime requests through the page's node for a few seconds: the page's
/// charts (one per server) must draw a request rate above zero.
fn charts_move_under_load(browser: &Browser, cluster: &Cluster, page_node: usize) {
    let url = cluster.url(page_node, "/1000");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(20)
            {
                let _ = get(&url);
            }
        })
    };
    let moved = wait_for(
        "a chart with requests/s above 0",
        Duration::from_secs(15),
        || {
            let charts = browser.execute(CHARTS, &[]).ok()?;
            let charts = charts.as_array()?.clone();
            let busy = charts.iter().find(|c| {
                let rate = c["caption"].as_str().unwrap_or("");
                // The rate line leaves the bottom (y 100) somewhere.
                let high = c["points"]
                    .as_str()
                    .unwrap_or("")
                    .split(' ')
                    .filter_map(|p| p.split_once(',')?.1.parse::<f64>().ok())
                    .any(|y| y < 100.0);
                !rate.starts_with("0 req/s") && high
            })?;
            (charts.len() == 3).then(|| busy.clone())
        },
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("the load thread");
    println!("chart under load: {moved}");
}

/// SIGKILLs the leader; the open page (a surviving node's) must name a new one
/// within 2 s, the one the cluster agrees on, and show the old one down.
fn new_leader_shown_within_2s(browser: &Browser, cluster: &mut Cluster, leader: usize) {
    let old = cluster.ids[leader].clone();
    let shown = browser.find("#leader").expect("#leader");
    let killed_at = Instant::now();
    cluster.kill_node(leader);
    let new = wait_for("a new leader on the page", Duration::from_secs(10), || {
        let id = browser.text(&shown).ok()?;
        cluster
            .ids
            .iter()
            .any(|x| *x == id && *x != old)
            .then_some(id)
    });
    let took = killed_at.elapsed();
    println!("the page showed the new leader {new} {took:?} after {old} was killed");
    assert!(
        took <= NEW_LEADER_SHOWN_MAX,
        "the page took {took:?} to show the new leader (at most {NEW_LEADER_SHOWN_MAX:?})"
    );
    // The page must then show the leader the cluster agrees on. Not always
    // the one it first showed: a stall can bring another election soon after
    // (a CI run on a loaded 2-core host: D won term 2, A's election timer
    // ran out 0.73 s later and A won term 3), and the page follows.
    wait_for(
        "the page showing the cluster's leader",
        Duration::from_secs(10),
        || {
            let agreed = cluster.agreed_leader()?;
            (browser.text(&shown).ok()? == cluster.ids[agreed]).then_some(())
        },
    );
    wait_for("the killed node shown down", Duration::from_secs(5), || {
        let up = browser.execute(RENDERED, &[]).ok()?["up"][leader].clone();
        (up == json!("down")).then_some(())
    });
}

/// Kills nodes until only the page's node and one other remain: no majority, so
/// no leader. The page must say so in its banner and `#leader`, and a save must
/// retry; once the nodes are back and elect a leader, the retried save succeeds.
fn no_leader_said_and_save_retried_until_one_is_back(
    browser: &Browser,
    cluster: &mut Cluster,
    page_node: usize,
    text: &str,
) {
    let killed: Vec<usize> = cluster
        .live()
        .into_iter()
        .filter(|i| *i != page_node)
        .take(2)
        .collect();
    for i in &killed {
        cluster.kill_node(*i);
    }
    let banner = browser.find("#banner").expect("#banner");
    wait_for("the no-leader banner", Duration::from_secs(10), || {
        let said = browser.text(&banner).ok()?;
        said.contains("has no leader").then_some(())
    });
    let shown = browser.find("#leader").expect("#leader");
    assert_eq!(browser.text(&shown).expect("#leader"), "none");

    let last = format!("{text}\nsaved once a leader was back");
    type_note(browser, &last);
    browser
        .click(&browser.find("#save").expect("#save"))
        .expect("click Save");
    let status = browser.find("#note-status").expect("#note-status");
    wait_for(
        "the page to say it retries",
        Duration::from_secs(10),
        || {
            let said = browser.text(&status).ok()?;
            said.starts_with("No leader, retrying (").then_some(())
        },
    );
    let path = screenshot_dir().join("noteraft-no-leader-1280.png");
    screenshot_whole_page(browser, 1280, &path);
    println!("screenshot: {}", path.display());

    let dead: Vec<usize> = (0..5).filter(|i| cluster.nodes[*i].is_none()).collect();
    for i in dead {
        cluster.restart_node(i);
    }
    println!("{}", wait_for_saved(browser, Duration::from_secs(30)));
    assert_note(cluster, page_node, &last);
    wait_for("the banner to go", Duration::from_secs(5), || {
        browser.text(&banner).ok()?.is_empty().then_some(())
    });
}

/// The cluster's note, read through node `via`, is `text`.
fn assert_note(cluster: &Cluster, via: usize, text: &str) {
    let (code, body, _) = get(&cluster.url(via, "/note")).expect("GET /note answered");
    assert_eq!(
        (code, body.as_str()),
        (200, text),
        "the note read through {via}"
    );
}

/// WebDriver's codes for the Control and Enter keys; Control pressed a second
/// time is released.
const CONTROL: char = '\u{E009}';
const ENTER: char = '\u{E007}';

/// Replaces the text of the page's note editor, typing it as a user would.
fn type_note(browser: &Browser, text: &str) {
    let note = browser.find("#note").expect("#note");
    browser.clear(&note).expect("clear #note");
    browser.send_keys(&note, text).expect("type the note");
}

/// Waits until `#note-status` says the note was saved, and returns what it says;
/// fails at once if it says the save failed.
fn wait_for_saved(browser: &Browser, limit: Duration) -> String {
    let status = browser.find("#note-status").expect("#note-status");
    wait_for("#note-status to say saved", limit, || {
        let said = browser.text(&status).ok()?;
        assert!(!said.starts_with("Not saved"), "the page says: {said}");
        said.starts_with("Saved on commit index ").then_some(said)
    })
}

/// Waits until the page of node `page` shows every node (up), every server and
/// `leader` as the leader.
fn wait_until_rendered(browser: &Browser, cluster: &Cluster, page: usize, leader: usize) {
    let want_title = format!("NoteRaft — raftlb node {}", cluster.ids[page]);
    let mut last = Value::Null;
    let limit = Duration::from_secs(10);
    let start = Instant::now();
    loop {
        if let Ok(seen) = browser.execute(RENDERED, &[]) {
            let all_up = seen["up"]
                .as_array()
                .is_some_and(|up| up.len() == 5 && up.iter().all(|u| u == "up"));
            if seen["leader"] == json!(cluster.ids[leader])
                && seen["title"] == json!(want_title)
                && seen["servers"] == json!(3)
                && all_up
            {
                return;
            }
            last = seen;
        }
        assert!(
            start.elapsed() < limit,
            "node {}'s page not rendered within {limit:?}; it shows {last}",
            cluster.ids[page]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A screenshot of the whole page at `width`, with nothing wider than the window:
/// the window is made as tall as the page, since WebDriver screenshots only the
/// viewport (headless Chromium's window is taller than its viewport by a margin).
fn screenshot_whole_page(browser: &Browser, width: u32, path: &std::path::Path) {
    const SIZES: &str = "const d = document.documentElement;
        return [d.scrollHeight + window.outerHeight - window.innerHeight, window.innerWidth, d.scrollWidth];";
    browser.set_window_size(width, 900).expect("resize");
    let mut sizes = browser.execute(SIZES, &[]).expect("the page's size");
    // Room to spare: the page may grow by a line (an event) while this runs,
    // and a vertical scrollbar would take its width from the viewport. During
    // an election it can grow by more than the room between the measure and
    // the resize (seen once in CI: 1265 of 1280 px): measure again, three
    // times at most.
    for _ in 0..3 {
        let height = (sizes[0].as_u64().unwrap_or(900) + 120).clamp(600, 4000) as u32;
        browser.set_window_size(width, height).expect("resize");
        sizes = browser.execute(SIZES, &[]).expect("the page's size");
        if sizes[2] == json!(width) {
            break;
        }
    }
    assert_eq!(sizes[1], json!(width), "the viewport is {width} px wide");
    assert_eq!(
        sizes[2],
        json!(width),
        "nothing is wider than the {width} px viewport"
    );
    browser.screenshot(path).expect("screenshot");
}

/// `target/screenshots/`, created: under CARGO_TARGET_DIR when it is set.
fn screenshot_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| manifest.join(t)) // a relative CARGO_TARGET_DIR is relative to here
        .unwrap_or_else(|| manifest.join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}
