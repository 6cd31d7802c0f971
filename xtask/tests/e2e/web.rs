//! The web front through nginx on the provisioned test host: static files answered by nginx
//! itself (Node stopped meanwhile), security headers on every kind of response, the assets of
//! an earlier release still served after a deploy (skew protection), a real browser (Debian's
//! Chromium driven by playwright-core, tests/e2e/browser.cjs) whose open page keeps working
//! across a deploy, and the pruning of old assets.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::support::{Scratch, Site, ROOT};
use crate::Ctx;

/// The product page: every frontend change of these scenarios edits it, so its chunk
/// (`nodes/N.<hash>.js`) differs between the releases and an open page must lazy-load the
/// old one.
const PRODUCT_PAGE: &str = "frontend/src/routes/products/[id]/+page.svelte";
const PRODUCT_NAME: &str = "Skew test serum";

/// The scratch checkout of these scenarios, made on first use.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.web_scratch.is_none() {
        ctx.web_scratch = Some(crate::support::scratch("web")?);
    }
    Ok(ctx.web_scratch.as_ref().unwrap())
}

/// The provisioned site with a current release (deployed from the scratch if there is none).
fn deployed_site(ctx: &mut Ctx) -> Result<Site> {
    let site = ctx.site()?;
    if site.current_opt()?.is_none() {
        let s = scratch(ctx)?;
        site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()
            .context("the first deploy of the web scenarios")?;
    }
    Ok(site)
}

/// Commit a visible change to the product page and deploy the frontend; the new release.
fn deploy_frontend_change(
    site: &Site,
    s: &Scratch,
    mark: &str,
    env: &[(&str, &str)],
) -> Result<String> {
    let text = s.read(PRODUCT_PAGE)?;
    let anchor = "<h2 id=\"history-heading\">";
    ensure!(text.contains(anchor), "{PRODUCT_PAGE} has no {anchor}");
    s.write(
        PRODUCT_PAGE,
        &text.replacen(anchor, &format!("<p hidden>{mark}</p>\n\n{anchor}"), 1),
    )?;
    s.commit(&format!("product page: {mark}"))?;
    let mut cmd = site.command(&s.dir, &["deploy", "frontend", "--skip-local-checks"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().context("running the xtask binary")?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "deploy of '{mark}' failed:\n{all}");
    site.current()
}

/// The URL paths of the immutable assets a release has on disk (the precompressed twins
/// `.gz`/`.br` left out: nginx picks them by Accept-Encoding).
fn release_assets(site: &Site, release: &str) -> Result<BTreeSet<String>> {
    let out = site.sh(&format!(
        "cd {ROOT}/releases/{release}/frontend/build/client && find _app/immutable -type f ! -name '*.gz' ! -name '*.br'"
    ))?;
    Ok(out.lines().map(|l| format!("/{}", l.trim())).collect())
}

/// The immutable assets of every release directory on the server.
fn assets_of_present_releases(site: &Site) -> Result<BTreeSet<String>> {
    let out = site.sh(&format!(
        "cd {ROOT}/releases && for r in */; do (cd \"$r/frontend/build/client\" 2>/dev/null && find _app/immutable -type f ! -name '*.gz' ! -name '*.br'); done"
    ))?;
    Ok(out.lines().map(|l| format!("/{}", l.trim())).collect())
}

/// The `/_app/immutable/...` URLs a page references.
fn chunk_urls(html: &str) -> BTreeSet<String> {
    html.split("_app/immutable/")
        .skip(1)
        .filter_map(|rest| {
            let end = rest.find(|c: char| "\"'`) \n".contains(c))?;
            Some(format!("/_app/immutable/{}", &rest[..end]))
        })
        .collect()
}

/// A finished HTTP exchange: status, headers (in order, names lowercased) and body bytes.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// HTTP/1.1 GET with extra request headers; the body de-chunked, never decompressed.
pub fn fetch(host: &str, path: &str, extra: &[(&str, &str)]) -> Result<Response> {
    let mut stream =
        TcpStream::connect((host, 80)).with_context(|| format!("connecting to {host}:80"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no end of headers in the answer to GET {path}"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in the answer to GET {path}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).with_context(|| format!("bad chunked body from GET {path}"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("no chunk size line")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A file of the current release on the server, as bytes.
fn server_file(site: &Site, path: &str) -> Result<Vec<u8>> {
    let out = site.app.ssh_output(&["cat", path])?;
    ensure!(
        out.status.success(),
        "cat {path} on {}: {}",
        site.app.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// The security headers every response through nginx carries.
fn check_security_headers(what: &str, r: &Response) -> Result<()> {
    let want = [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ];
    for (name, value) in want {
        ensure!(
            r.all(name) == [value],
            "{what} (HTTP {}): {name} is {:?}, expected exactly {value:?}; headers: {:?}",
            r.status,
            r.all(name),
            r.headers
        );
    }
    let pp = r.all("permissions-policy");
    ensure!(
        pp.len() == 1 && pp[0].contains("camera=()") && pp[0].contains("geolocation=()"),
        "{what}: Permissions-Policy {pp:?}"
    );
    let csp = r.all("content-security-policy");
    ensure!(
        csp.len() == 1
            && csp[0].contains("frame-ancestors 'none'")
            && csp[0].contains("default-src")
            && !csp[0].contains("unsafe-eval"),
        "{what}: expected one Content-Security-Policy with default-src and frame-ancestors 'none', got {csp:?}"
    );
    ensure!(
        r.header("server") == Some("nginx"),
        "{what}: Server header {:?} (server_tokens off shows no version)",
        r.header("server")
    );
    Ok(())
}

/// Static files come from nginx without Node: with the web server and its socket stopped, the
/// favicon, robots.txt and every immutable asset still answer with their bytes and cache
/// headers (and .gz twins when asked), while pages fail; with Node back, pages come from it.
pub fn static_files_from_nginx(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let ip = site.app.ip.clone();
    let cur = site.current()?;
    let client = format!("{ROOT}/releases/{cur}/frontend/build/client");

    let page = fetch(&ip, "/", &[])?;
    ensure!(page.status == 200, "/ answered {}", page.status);
    ensure!(
        page.header("x-sveltekit-page") == Some("true"),
        "/ does not come from the SvelteKit server: {:?}",
        page.headers
    );
    let chunks = chunk_urls(&page.text());
    ensure!(!chunks.is_empty(), "/ references no immutable assets");

    let stop = "systemctl stop innercontext-node.socket innercontext-node.service && ! systemctl is-active -q innercontext-node.service";
    site.sh(stop)?;
    let checked = (|| -> Result<()> {
        for (path, cache) in [
            ("/favicon.svg", "public, max-age=300"),
            ("/robots.txt", "public, max-age=300"),
        ] {
            let r = fetch(&ip, path, &[])?;
            ensure!(
                r.status == 200,
                "{path} answered {} with Node stopped",
                r.status
            );
            ensure!(
                r.body == server_file(&site, &format!("{client}{path}"))?,
                "{path}: not the release's file"
            );
            ensure!(
                r.header("cache-control") == Some(cache),
                "{path}: Cache-Control {:?}, expected {cache:?}",
                r.header("cache-control")
            );
            check_security_headers(path, &r)?;
        }
        for path in &chunks {
            let r = fetch(&ip, path, &[])?;
            ensure!(
                r.status == 200,
                "{path} answered {} with Node stopped",
                r.status
            );
            ensure!(
                r.body == server_file(&site, &format!("{client}{path}"))?,
                "{path}: not the release's file"
            );
            ensure!(
                r.header("cache-control") == Some("public, max-age=31536000, immutable"),
                "{path}: Cache-Control {:?}",
                r.header("cache-control")
            );
            let gz = fetch(&ip, path, &[("Accept-Encoding", "gzip")])?;
            ensure!(
                gz.status == 200 && gz.header("content-encoding") == Some("gzip"),
                "{path} with Accept-Encoding gzip: HTTP {} {:?}",
                gz.status,
                gz.headers
            );
            ensure!(
                gz.body == server_file(&site, &format!("{client}{path}.gz"))?,
                "{path}: the gzip answer is not the build's .gz file"
            );
        }
        let missing = fetch(&ip, "/_app/immutable/chunks/nothing-here.js", &[])?;
        ensure!(
            missing.status == 404 && missing.header("cache-control").is_none(),
            "a missing asset: HTTP {} Cache-Control {:?} (a 404 must not be cached)",
            missing.status,
            missing.header("cache-control")
        );
        let page = fetch(&ip, "/", &[])?;
        ensure!(
            page.status == 502,
            "/ answered {} with Node stopped: who served it?",
            page.status
        );
        check_security_headers("nginx's 502 page", &page)?;
        Ok(())
    })();
    site.sh("systemctl start innercontext-node.socket")?;
    checked?;

    // Node is back (socket-activated on the first request): pages come from it again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = fetch(&ip, "/", &[])?;
        if r.status == 200 && r.header("x-sveltekit-page") == Some("true") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "/ answers {} 30 s after restarting Node",
            r.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let version = fetch(&ip, "/_app/version.json", &[])?;
    ensure!(
        version.status == 200 && version.header("cache-control").is_none(),
        "/_app/version.json: HTTP {} {:?}",
        version.status,
        version.headers
    );
    site.assert_serving()
}

/// Security headers on a page, a static file, an asset, a 404 of Node and of nginx, an API
/// answer, a refused page of the product list (the API's 422, the page's 400); the API's
/// documentation is not reachable through nginx.
pub fn security_headers(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let ip = site.app.ip.clone();
    let page = fetch(&ip, "/", &[])?;
    ensure!(page.status == 200, "/ answered {}", page.status);
    let chunk = chunk_urls(&page.text())
        .into_iter()
        .next()
        .context("/ references no assets")?;
    for (path, status) in [
        ("/", 200),
        ("/favicon.svg", 200),
        (chunk.as_str(), 200),
        ("/no-such-page", 404),
        ("/_app/immutable/nodes/none.js", 404),
        ("/api/health-check", 200),
        ("/api/products", 200),
        ("/api/products?limit=501", 422),
        ("/?after=abc", 400),
        ("/api/products/999999999/prices", 404),
    ] {
        let r = fetch(&ip, path, &[])?;
        ensure!(
            r.status == status,
            "{path} answered {}, expected {status}",
            r.status
        );
        check_security_headers(path, &r)?;
    }
    // The page's policy is SvelteKit's, with a nonce for its inline start-up script.
    let csp = page.header("content-security-policy").unwrap_or_default();
    ensure!(
        csp.contains("script-src 'self' 'nonce-") && page.text().contains("nonce=\""),
        "the page's CSP has no nonce for the start-up script: {csp}"
    );
    for path in [
        "/api/docs",
        "/api/docs/",
        "/api/redoc",
        "/api/openapi.json",
        "/api//openapi.json",
        "/api/docs/oauth2-redirect",
    ] {
        let r = fetch(&ip, path, &[])?;
        ensure!(
            r.status == 404,
            "{path} answered {} through nginx, expected 404",
            r.status
        );
        ensure!(
            !r.text().contains("openapi") && !r.text().contains("swagger"),
            "{path}: the 404 shows API documentation"
        );
        check_security_headers(path, &r)?;
    }
    Ok(())
}

/// Record the assets of the current release, deploy a frontend change: every old asset still
/// answers 200 with the same bytes (also those the new release no longer has), and the new
/// release's assets answer too. A rollback to the old release serves its page and assets again.
pub fn old_assets_survive_a_deploy(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let ip = site.app.ip.clone();
    let old = site.current()?;
    let old_assets = release_assets(&site, &old)?;
    let page_chunks = chunk_urls(&fetch(&ip, "/", &[])?.text());
    ensure!(
        !page_chunks.is_empty() && page_chunks.is_subset(&old_assets),
        "the page's assets {page_chunks:?} are not all in release {old}"
    );
    let mut before = BTreeMap::new();
    for path in &old_assets {
        let r = fetch(&ip, path, &[])?;
        ensure!(
            r.status == 200,
            "{path} answered {} before the deploy",
            r.status
        );
        before.insert(path.clone(), r.body);
    }

    let s = scratch(ctx)?;
    let new = deploy_frontend_change(&site, s, "assets survive", &[])?;
    ensure!(new != old, "the deploy made no new release");
    let new_assets = release_assets(&site, &new)?;
    let gone: Vec<&String> = old_assets.difference(&new_assets).collect();
    let added: Vec<&String> = new_assets.difference(&old_assets).collect();
    ensure!(
        !gone.is_empty() && !added.is_empty(),
        "the frontend change did not change the assets (gone {gone:?}, added {added:?})"
    );

    let mut failures = Vec::new();
    for (path, bytes) in &before {
        let r = fetch(&ip, path, &[])?;
        if r.status != 200 {
            failures.push(format!("{path}: HTTP {}", r.status));
        } else if &r.body != bytes {
            failures.push(format!("{path}: different bytes"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} assets of the previous release {old} are broken after the deploy of {new} ({} of them only in {old}): {failures:?}",
        failures.len(),
        before.len(),
        gone.len()
    );
    for path in &added {
        let r = fetch(&ip, path, &[])?;
        ensure!(r.status == 200, "new asset {path} answered {}", r.status);
    }
    let page = fetch(&ip, "/", &[])?;
    for path in chunk_urls(&page.text()) {
        let r = fetch(&ip, &path, &[])?;
        ensure!(
            r.status == 200,
            "{path} of the new page answered {}",
            r.status
        );
    }

    // A rollback serves the old page again, and every asset it references answers.
    site.xtask(&s.dir, &["deploy", "rollback", &old])?.ok()?;
    ensure!(
        site.current()? == old,
        "the rollback did not switch to {old}"
    );
    let back = chunk_urls(&fetch(&ip, "/", &[])?.text());
    ensure!(
        back == page_chunks,
        "after the rollback the page references {back:?}, before the deploy {page_chunks:?}"
    );
    for path in &back {
        let r = fetch(&ip, path, &[])?;
        ensure!(
            r.status == 200 && Some(&r.body) == before.get(path),
            "{path} after the rollback: HTTP {}",
            r.status
        );
    }
    site.xtask(&s.dir, &["deploy", "rollback", &new])?.ok()?;
    ensure!(
        site.current()? == new,
        "the roll forward did not switch to {new}"
    );
    site.assert_serving()
}

/// A page opened in a real browser before a deploy keeps working after it: it navigates to a
/// product (client-side, or with one full load once it knows about the new release), back, and
/// to the product again, with no failed request, no page or console error, nothing fetched
/// from elsewhere, and the expected content; the old product chunk it needs exists only in the
/// previous release, and in the end it runs the new release's code.
pub fn open_page_survives_a_deploy(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let ip = site.app.ip.clone();
    let product = ensure_product(&site)?;
    let modules = xtask::tools::ensure_browser(&ctx.sh)?;
    let log = scratch(ctx)?.sidecar("browser.log");

    let old = site.current()?;
    let old_assets = release_assets(&site, &old)?;
    let mut browser = Browser::start(&format!("http://{ip}/"), &modules, &log)?;
    browser.cmd("open /")?;
    let first = browser.cmd("report")?;
    ensure!(
        first.get("h1") == Some("Products") && first.all("failed").is_empty(),
        "the page before the deploy:\n{}",
        first.text()
    );
    first.clean("the page before the deploy")?;
    browser.cmd("reset")?;

    let s = scratch(ctx)?;
    let mark = "open page";
    let new = deploy_frontend_change(&site, s, mark, &[])?;
    ensure!(new != old, "the deploy made no new release");
    let only_old: BTreeSet<String> = old_assets
        .difference(&release_assets(&site, &new)?)
        .cloned()
        .collect();

    browser.cmd(&format!("click {PRODUCT_NAME} /products/{product}"))?;
    let at_product = browser.cmd("report")?;
    ensure!(
        at_product.get("h1") == Some(PRODUCT_NAME),
        "the product page after the deploy:\n{}",
        at_product.text()
    );
    browser.cmd("back /")?;
    let back = browser.cmd("report")?;
    ensure!(
        back.get("h1") == Some("Products"),
        "back on the list after the deploy:\n{}",
        back.text()
    );
    // By now the page knows of the new release: the next link takes it there.
    browser.cmd(&format!("click {PRODUCT_NAME} /products/{product}"))?;
    let end = browser.cmd("report")?;
    ensure!(
        end.get("h1") == Some(PRODUCT_NAME) && end.all("mark").contains(&mark),
        "the page does not run the new release's product page (mark {mark:?}) in the end:\n{}",
        end.text()
    );
    end.clean("the open page across the deploy")?;
    ensure!(
        end.number("text_length")? > 50,
        "the page is (nearly) blank:\n{}",
        end.text()
    );
    // The point of the exercise: the open page loaded code that only the old release has.
    let old_loaded: Vec<&str> = end
        .all("asset")
        .into_iter()
        .filter(|a| {
            a.split_once(' ')
                .is_some_and(|(_, path)| only_old.contains(path))
        })
        .collect();
    ensure!(
        !old_loaded.is_empty(),
        "the open page loaded no asset of the previous release after the deploy, so nothing was tested (did it learn of the release before the click?):\n{}",
        end.text()
    );
    let loads = end.all("document");
    ensure!(
        loads.len() <= 2,
        "the page was loaded {} times after the deploy:\n{}",
        loads.len(),
        end.text()
    );
    eprintln!(
        "      (old assets loaded after the deploy: {}; full page loads: {loads:?})",
        old_loaded.join(", ")
    );
    browser.quit()
}

/// `deploy --maintenance` held by the job's test pause before its switch (maintenance on since
/// before the migration): a browser opening the site gets the maintenance page (503, the
/// deploy's message); once the job goes on and the deploy ends, the same browser gets the app.
pub fn a_browser_sees_maintenance_during_a_deploy(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let ip = site.app.ip.clone();
    let modules = xtask::tools::ensure_browser(&ctx.sh)?;
    let log = scratch(ctx)?.sidecar("browser-maintenance.log");
    let s = scratch(ctx)?;
    let text = s.read(PRODUCT_PAGE)?;
    s.write(
        PRODUCT_PAGE,
        &format!("{text}\n<p hidden>maintenance</p>\n"),
    )?;
    s.commit("product page: maintenance")?;
    let args = ["deploy", "frontend", "--skip-local-checks", "--maintenance"];
    let held = crate::support::paused(&site, s, "switch", &args)?;
    let mut browser = Browser::start(&format!("http://{ip}/"), &modules, &log)?;
    let during = (|| -> Result<()> {
        browser.cmd("open /")?;
        let page = browser.cmd("report")?;
        ensure!(
            page.get("h1") == Some("Down for maintenance")
                && page.all("document").contains(&"503 /"),
            "the browser does not see the maintenance page during the deploy:\n{}",
            page.text()
        );
        let r = fetch(&ip, "/", &[])?;
        ensure!(
            r.status == 503
                && r.text()
                    .contains(xtask::contract::MAINTENANCE_DEPLOY_MESSAGE),
            "GET / during the deploy: {}\n{}",
            r.status,
            r.text()
        );
        Ok(())
    })();
    crate::support::resume(&site)?;
    let (status, out) = held.bg.wait(Duration::from_secs(240))?;
    during?;
    ensure!(status.success(), "the deploy --maintenance failed:\n{out}");
    ensure!(
        site.last_log()?.contains("maintenance=yes"),
        "deploy.log does not say maintenance=yes: {}",
        site.last_log()?
    );
    browser.cmd("reset")?;
    browser.cmd("open /")?;
    let after = browser.cmd("report")?;
    ensure!(
        after.get("h1") == Some("Products") && after.all("document").contains(&"200 /"),
        "the browser does not see the app after the deploy:\n{}",
        after.text()
    );
    after.clean("the app after the deploy --maintenance")?;
    browser.quit()?;
    site.assert_serving()
}

/// With DEPLOY_KEEP=2, two further deploys leave the oldest release out of the kept ones, but
/// its assets stay (it stopped being current minutes ago: the 24 h rule); then with the grace
/// time set to 0 (test hook INNERCONTEXT_ASSET_GRACE, seconds), one more deploy removes every
/// asset no kept release has.
pub fn old_assets_pruned_after_keep_and_grace(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let ip = site.app.ip.clone();
    let s = scratch(ctx)?;
    let first = site.current()?;
    let first_assets = release_assets(&site, &first)?;
    let keep = [("DEPLOY_KEEP", "2")];
    let second = deploy_frontend_change(&site, s, "prune 1", &keep)?;
    let third = deploy_frontend_change(&site, s, "prune 2", &keep)?;
    let kept: BTreeSet<String> = release_assets(&site, &second)?
        .union(&release_assets(&site, &third)?)
        .cloned()
        .collect();
    let orphans: Vec<&String> = first_assets.difference(&kept).collect();
    ensure!(!orphans.is_empty(), "no asset of {first} is orphaned");
    for path in &orphans {
        let r = fetch(&ip, path, &[])?;
        ensure!(
            r.status == 200,
            "{path} of {first} answered {} minutes after {first} stopped being current (kept for 24 h)",
            r.status
        );
    }

    deploy_frontend_change(
        &site,
        s,
        "prune 3",
        &[("DEPLOY_KEEP", "2"), ("INNERCONTEXT_ASSET_GRACE", "0")],
    )?;
    // Kept: whatever any release still on the server has (failed ones too, while they stay).
    let kept = assets_of_present_releases(&site)?;
    let stored = site.sh(&format!(
        "cd {ROOT}/shared/assets && find _app/immutable -type f ! -name '*.gz' ! -name '*.br'"
    ))?;
    let stored: BTreeSet<String> = stored.lines().map(|l| format!("/{}", l.trim())).collect();
    let stale: Vec<&String> = stored.difference(&kept).collect();
    ensure!(
        stale.is_empty(),
        "{} assets no kept release has are still in shared/assets after the grace time: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    let orphans: Vec<&String> = first_assets.difference(&kept).collect();
    ensure!(
        !orphans.is_empty(),
        "no asset of {first} is left without a release"
    );
    for path in &orphans {
        let r = fetch(&ip, path, &[])?;
        ensure!(
            r.status == 404,
            "{path} of the pruned {first} still answers {}",
            r.status
        );
    }
    for path in &kept {
        let r = fetch(&ip, path, &[])?;
        ensure!(r.status == 200, "kept asset {path} answered {}", r.status);
    }
    site.assert_serving()
}

/// The id of the product the browser scenario visits, created through the API if missing. It
/// must be on the first page of the list (the first 100 by id: the home page shows those).
fn ensure_product(site: &Site) -> Result<u64> {
    let find = |list: &str| -> Option<u64> {
        let at = list.find(&format!("\"name\":\"{PRODUCT_NAME}\""))?;
        let before = &list[..at];
        let id = before.rsplit("\"id\":").next()?;
        id.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let (status, list) = site.get("/api/products")?;
    ensure!(status == 200, "/api/products answered {status}");
    if let Some(id) = find(&list) {
        return Ok(id);
    }
    site.sh(&format!(
        "curl -fsS -X POST -H 'content-type: application/json' -d '{{\"name\":\"{PRODUCT_NAME}\"}}' http://127.0.0.1:8000/products"
    ))?;
    let (_, list) = site.get("/api/products")?;
    find(&list).context(
        "the product just created is not on the first page of /api/products (100 products before it?)",
    )
}

/// One answer of tests/e2e/browser.cjs: `key=value` lines.
struct Report(Vec<(String, String)>);

impl Report {
    fn get(&self, key: &str) -> Option<&str> {
        self.all(key).into_iter().next()
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn number(&self, key: &str) -> Result<usize> {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no number {key} in:\n{}", self.text()))
    }

    fn text(&self) -> String {
        self.0.iter().map(|(k, v)| format!("  {k}={v}\n")).collect()
    }

    /// No failed request, no page or console error, nothing requested from elsewhere.
    fn clean(&self, what: &str) -> Result<()> {
        for key in ["failed", "error", "offsite"] {
            ensure!(
                self.all(key).is_empty(),
                "{what}: {key}: {:?}\n{}",
                self.all(key),
                self.text()
            );
        }
        Ok(())
    }
}

/// Chromium with one page, driven line by line through tests/e2e/browser.cjs.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: camino::Utf8PathBuf,
    /// Chromium's profile: new and empty for each browser, removed on drop.
    profile: camino::Utf8PathBuf,
}

impl Browser {
    fn start(base: &str, modules: &camino::Utf8Path, log: &camino::Utf8Path) -> Result<Browser> {
        let script =
            camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/browser.cjs");
        let stderr = fs_err::File::create(log)?;
        let profile = camino::Utf8PathBuf::from(format!("{log}.profile"));
        if profile.exists() {
            fs_err::remove_dir_all(&profile)?;
        }
        fs_err::create_dir_all(&profile)?;
        let mut child = Command::new(xtask::tools::node_bin_dir().join("node"))
            .arg(script)
            .arg(base)
            .env("NODE_PATH", modules)
            .env("INNERCONTEXT_BROWSER_PROFILE", &profile)
            .env("INNERCONTEXT_CHROMIUM", xtask::tools::CHROMIUM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.into_parts().0))
            .spawn()
            .context("starting node tests/e2e/browser.cjs")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Browser {
            child,
            stdin,
            stdout,
            log: log.to_path_buf(),
            profile,
        })
    }

    /// Send one command, read its answer; `fail=` in it is an error.
    fn cmd(&mut self, line: &str) -> Result<Report> {
        writeln!(self.stdin, "{line}")
            .with_context(|| format!("the browser is gone (log: {})", self.log))?;
        let mut pairs = Vec::new();
        loop {
            let mut l = String::new();
            if self.stdout.read_line(&mut l)? == 0 {
                bail!(
                    "the browser ended during '{line}': {}",
                    fs_err::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let l = l.trim_end();
            if l == "done" {
                break;
            }
            if let Some((k, v)) = l.split_once('=') {
                pairs.push((k.to_string(), v.to_string()));
            }
        }
        let report = Report(pairs);
        if let Some(fail) = report.get("fail") {
            bail!("browser: '{line}' failed: {fail}\n{}", report.text());
        }
        Ok(report)
    }

    fn quit(mut self) -> Result<()> {
        writeln!(self.stdin, "quit")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            ensure!(Instant::now() < deadline, "the browser did not quit");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs_err::remove_dir_all(&self.profile);
        let _ = fs_err::remove_file(&self.log);
    }
}
