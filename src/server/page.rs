//! `GET /`: the NoteRaft page, rendered with what this node knows.
//!
//! The page (`page.html`, one self-contained file) is a template: the server
//! fills in this node's role, term and leader, the nodes, the servers' load
//! and the note as this node has applied it, every value HTML-escaped (server
//! ids, URLs and the note come from the network). So the page reads without
//! JavaScript, and its form posts the seed's `textareaData` to `/note`, which
//! answers 303 back here. With JavaScript, the script removes the rendered
//! rows and keeps its own up to date, failing over to other nodes (see the
//! script in `page.html`).

use std::fmt::Write;

use crate::status::Status;

const TEMPLATE: &str = include_str!("page.html");

/// The page for this node, from its `/status` and its applied note.
pub fn render(status: &Status, note: &str) -> String {
    let me = status.id.as_str();

    let mut node_rows = String::new();
    for node in &status.nodes {
        let is_me = node.id == status.id;
        let is_leader = status.leader.as_deref() == Some(node.id.as_str());
        let (role, term, up) = if is_me {
            (status.role.clone(), status.term.to_string(), "up")
        } else {
            ("—".to_string(), "—".to_string(), "—")
        };
        let (seen, seen_class) = match node.reachable {
            Some(true) => ("yes", "up"),
            Some(false) => ("no", "down"),
            None => ("—", "unknown"),
        };
        let _ = write!(
            node_rows,
            "<tr class=\"rendered{leader_class}\"><th scope=\"row\">{id}{leader_tag}{here_tag}</th>\
             <td class=\"addr\" data-label=\"Address\">{addr}</td>\
             <td data-label=\"Role\">{role}</td>\
             <td class=\"num\" data-label=\"Term\">{term}</td>\
             <td class=\"{up_class}\" data-label=\"Up\">{up}</td>\
             <td class=\"{seen_class}\" data-label=\"Seen by {me}\">{seen}</td></tr>",
            leader_class = if is_leader { " is-leader" } else { "" },
            id = escape(&node.id),
            leader_tag = if is_leader {
                " <span class=\"tag leader\">★ LEADER</span>"
            } else {
                ""
            },
            here_tag = if is_me {
                " <span class=\"tag here\">this page</span>"
            } else {
                ""
            },
            addr = if node.voter {
                escape(&node.addr)
            } else {
                format!("{} (learner)", escape(&node.addr))
            },
            role = escape(&role),
            up_class = if is_me { "up" } else { "unknown" },
            me = escape(me),
        );
    }

    let mut server_rows = String::new();
    for server in &status.servers {
        let cpu = server.cpu.clamp(0.0, 100.0);
        let wait = server.wait.clamp(0.0, 100.0);
        let total = (cpu + wait).min(100.0);
        let (state, state_class) = if server.alive {
            ("alive", "up")
        } else {
            ("dead", "down")
        };
        let _ = write!(
            server_rows,
            "<tr class=\"rendered\"><th scope=\"row\">{id}<span class=\"url addr\">{url}</span></th>\
             <td data-label=\"Load\"><div class=\"load\"><div class=\"meter\" role=\"meter\" \
             aria-label=\"load of {id}, percent\" aria-valuemin=\"0\" aria-valuemax=\"100\" \
             aria-valuenow=\"{total:.1}\"><span class=\"cpu\" style=\"width: {cpu:.1}%\"></span>\
             <span class=\"wait\" style=\"width: {wait_width:.1}%\"></span></div>\
             <span class=\"load-text num\">cpu {cpu:.1} % + wait {wait:.1} %</span></div></td>\
             <td class=\"{state_class}\" data-label=\"State\">{state}</td>\
             <td class=\"num\" data-label=\"Last report\">{age}</td></tr>",
            id = escape(&server.id),
            url = escape(&server.url),
            wait_width = (total - cpu).max(0.0),
            age = age(server.age_ms),
        );
    }

    let values: [(&str, String); 11] = [
        ("{{this-node}}", escape(me)),
        (
            "{{insecure-hidden}}",
            if status.insecure { "" } else { " hidden" }.to_string(),
        ),
        ("{{role}}", escape(&status.role)),
        (
            "{{leader}}",
            escape(status.leader.as_deref().unwrap_or("none")),
        ),
        ("{{term}}", status.term.to_string()),
        ("{{commit}}", status.commit_index.to_string()),
        ("{{node-rows}}", node_rows),
        (
            "{{no-servers-hidden}}",
            if status.servers.is_empty() {
                ""
            } else {
                " hidden"
            }
            .to_string(),
        ),
        ("{{server-rows}}", server_rows),
        ("{{note-bytes}}", note.len().to_string()),
        // HTML drops one newline right after <textarea>: one is given, so a
        // note that starts with a newline keeps it.
        ("{{note}}", format!("\n{}", escape(note))),
    ];
    fill(TEMPLATE, &values)
}

/// The template with every `{{name}}` replaced, in one pass, so that a value
/// (the note may contain `{{note}}`) is never itself filled in.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match values.iter().find(|(name, _)| tail.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &tail[name.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text for an HTML text node or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// As the script words a report's age.
fn age(ms: u64) -> String {
    match ms {
        0..60_000 => format!("{:.1} s ago", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min ago", (ms as f64 / 60_000.0).round()),
        _ => format!("{} h ago", (ms as f64 / 3_600_000.0).round()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_once_and_values_are_not_filled_again() {
        let out = fill(
            "<p>{{a}} and {{b}} {{unknown}}</p>",
            &[("{{a}}", "{{b}}".into()), ("{{b}}", "B".into())],
        );
        assert_eq!(out, "<p>{{b}} and B {{unknown}}</p>");
    }

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape("</textarea><script>alert('x')</script> & \"q\""),
            "&lt;/textarea&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn the_template_names_only_known_placeholders() {
        let names = [
            "{{this-node}}",
            "{{insecure-hidden}}",
            "{{role}}",
            "{{leader}}",
            "{{term}}",
            "{{commit}}",
            "{{node-rows}}",
            "{{no-servers-hidden}}",
            "{{server-rows}}",
            "{{note}}",
            "{{note-bytes}}",
        ];
        let values: Vec<(&str, String)> = names.iter().map(|n| (*n, String::new())).collect();
        let out = fill(TEMPLATE, &values);
        for name in names {
            assert!(TEMPLATE.contains(name), "{name} is in the page");
        }
        assert!(!out.contains("{{this-node}}") && !out.contains("{{note}}"));
    }

    #[test]
    fn ages_read_as_the_script_writes_them() {
        assert_eq!(age(1500), "1.5 s ago");
        assert_eq!(age(90_000), "2 min ago");
        assert_eq!(age(7_200_000), "2 h ago");
    }
}
