//! HTML building blocks: escaping, formatting, the page frame, the chart.

use super::*;

/// Escapes text for HTML.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// Escapes a query-string value.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/*:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) fn ratio(hits: u64, misses: u64) -> String {
    if hits + misses == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * hits as f64 / (hits + misses) as f64)
    }
}

pub(super) fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

pub(super) fn human(d: Option<Duration>) -> String {
    match d {
        None => "never".into(),
        Some(d) if d.as_secs() >= 86_400 => format!("{} d", d.as_secs() / 86_400),
        Some(d) if d.as_secs() >= 3600 => format!("{} h", d.as_secs() / 3600),
        Some(d) if d.as_secs() >= 60 => format!("{} min", d.as_secs() / 60),
        Some(d) => format!("{} s", d.as_secs()),
    }
}

pub(super) fn page(granted: &Granted, base: &str, title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} · ultracache</title><style>\
         body{{font:15px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2330;background:#fff}}\
         nav a{{margin-right:1rem}} table{{border-collapse:collapse;margin:1rem 0}}\
         th,td{{border-bottom:1px solid #dde;padding:.3rem .7rem;text-align:left}}\
         th a{{color:inherit}} .num{{text-align:right}} .big{{font-size:1.6rem;font-weight:600}}\
         .cards{{display:flex;gap:2rem}} form.inline{{display:inline}} button{{cursor:pointer}}\
         svg{{background:#f6f7fb;border:1px solid #dde}} code{{font-size:.85em}}\
         </style></head><body><nav><b>ultracache</b> · <a href=\"{home}\">overview</a>\
         <a href=\"{base}/urls\">cached URLs</a><a href=\"{base}/models\">models</a></nav>\
         <h1>{title}</h1>{body}<form method=\"post\" action=\"{base}/clear\">{csrf}\
         <button>Forget everything</button></form></body></html>",
        title = esc(title),
        home = esc(if base.is_empty() { "/" } else { base }),
        base = esc(base),
        csrf = csrf_field(granted),
    ))
}

pub(super) fn csrf_field(granted: &Granted) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&granted.csrf)
    )
}

/// An SVG line of the hit ratio over the kept samples.
pub(super) fn chart(admin: &Admin) -> String {
    let history: Vec<Sample> = admin
        .history
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .collect();
    let (w, h) = (480.0, 120.0);
    let mut points = Vec::new();
    for pair in history.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (dh, dm) = (
            b.hits.saturating_sub(a.hits),
            b.misses.saturating_sub(a.misses),
        );
        let r = if dh + dm == 0 {
            0.0
        } else {
            dh as f64 / (dh + dm) as f64
        };
        points.push(r);
    }
    if points.is_empty() {
        points.push(totals().0 as f64 / (totals().0 + totals().1).max(1) as f64);
    }
    let step = if points.len() > 1 {
        w / (points.len() - 1) as f64
    } else {
        0.0
    };
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{:.1},{:.1}", i as f64 * step, h - r * (h - 10.0) - 5.0))
        .collect();
    format!(
        "<svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"hit ratio over time\">\
         <polyline fill=\"none\" stroke=\"#2f6fdf\" stroke-width=\"2\" points=\"{}\"/></svg>\
         <p>Hit ratio over the last {} samples (every 10 s).</p>",
        line.join(" "),
        points.len()
    )
}
