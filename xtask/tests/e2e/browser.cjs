// The browser of the end-to-end tests (tests/e2e/web.rs): Debian's Chromium driven by
// playwright-core (installed by `cargo xtask ci --only tools` under target/tools/playwright and
// found through NODE_PATH). Nothing is downloaded: the browser is /usr/bin/chromium.
//
//   node browser.cjs BASE_URL
//
// It opens one page and then obeys one command per line on stdin, answering each with
// `key=value` lines and a final `done` (or `fail=MESSAGE` and `done`):
//
//   open PATH              load BASE_URL + PATH
//   click NAME PATH        click the link named NAME, wait until the page is at PATH
//   back PATH              history back, wait until the page is at PATH
//
// Each of these then waits until the page is loaded and no request has been in flight for
// 500 ms.
//   report                 what the page shows and everything seen since the last reset
//   reset                  forget the events seen so far
//   quit
//
// Every request to anything but BASE_URL's origin is refused and reported (`offsite=`).
// `failed=` lists answers with an HTTP error status and requests that failed in the network;
// requests the page cancelled itself (net::ERR_ABORTED) are listed as `aborted=`.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { chromium } = require('playwright-core');

const base = new URL(process.argv[2]);
const executablePath = process.env.INNERCONTEXT_CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = 30_000;

const oneLine = (value) => String(value).replace(/\s+/g, ' ').trim();

const started = Date.now();
const stamp = () => `${((Date.now() - started) / 1000).toFixed(3)}s`;

let events;
function reset() {
	events = {
		failed: [],
		errors: [],
		warnings: [],
		documents: [],
		assets: [],
		offsite: [],
		aborted: [],
		log: []
	};
}
reset();

// Requests in flight, for `quiet` (SvelteKit's client-side navigations load nothing the
// browser counts as a page load, so Playwright's load states do not cover them).
const inflight = new Set();
let lastActivity = Date.now();
const note = (what) => {
	lastActivity = Date.now();
	events.log.push(`${stamp()} ${what}`);
};

/** Resolves once no request has been in flight for 500 ms (at most TIMEOUT_MS). */
async function quiet() {
	const deadline = Date.now() + TIMEOUT_MS;
	while (inflight.size > 0 || Date.now() - lastActivity < 500) {
		if (Date.now() > deadline) throw new Error(`the network did not go quiet (in flight: ${[...inflight].map((r) => r.url()).join(', ')})`);
		await new Promise((resolve) => setTimeout(resolve, 50));
	}
}

function out(lines) {
	process.stdout.write(lines.map((l) => `${l}\n`).join('') + 'done\n');
}

async function main() {
	// A new, empty profile for every run: the test hands over an empty directory and removes it
	// afterwards (whatever happens to this process); run by hand, a temporary one.
	const profile =
		process.env.INNERCONTEXT_BROWSER_PROFILE ??
		fs.mkdtempSync(path.join(os.tmpdir(), 'innercontext-chromium-'));
	if (fs.readdirSync(profile).length > 0) throw new Error(`profile ${profile} is not empty`);
	const context = await chromium.launchPersistentContext(profile, {
		executablePath,
		headless: true,
		args: [
			'--headless',
			'--no-sandbox',
			'--disable-gpu',
			'--disable-quic',
			'--no-first-run',
			'--disable-background-networking',
			'--disable-component-update',
			'--disable-sync'
		]
	});
	context.setDefaultTimeout(TIMEOUT_MS);
	await context.route('**/*', (route) => {
		const url = new URL(route.request().url());
		if (url.origin === base.origin) return route.continue();
		events.offsite.push(url.href);
		return route.abort();
	});
	const page = context.pages()[0] ?? (await context.newPage());
	page.on('pageerror', (err) => events.errors.push(`pageerror: ${oneLine(err.message)}`));
	page.on('console', (msg) => {
		if (msg.type() === 'error') events.errors.push(`console: ${oneLine(msg.text())}`);
		if (msg.type() === 'warning') events.warnings.push(oneLine(msg.text()));
	});
	page.on('request', (req) => {
		inflight.add(req);
		note(`request ${req.resourceType()} ${req.url()}`);
	});
	page.on('requestfinished', (req) => {
		inflight.delete(req);
		note(`finished ${req.url()}`);
	});
	page.on('requestfailed', (req) => {
		inflight.delete(req);
		const reason = req.failure()?.errorText ?? 'failed';
		note(`failed ${reason} ${req.url()}`);
		// net::ERR_ABORTED: the page itself dropped the request (SvelteKit does that with some
		// of its data requests when preloading on hover meets a navigation, deploy or not).
		// Reported, but not a failure; a refused or broken connection is.
		if (reason === 'net::ERR_ABORTED') events.aborted.push(req.url());
		else events.failed.push(`${reason} ${req.url()}`);
	});
	page.on('framenavigated', (frame) => {
		if (frame === page.mainFrame()) note(`at ${frame.url()}`);
	});
	page.on('response', (res) => {
		const url = new URL(res.url());
		if (res.status() >= 400) events.failed.push(`${res.status()} ${res.url()}`);
		if (url.pathname.startsWith('/_app/immutable/')) {
			events.assets.push(`${res.status()} ${url.pathname}`);
		}
		if (res.request().resourceType() === 'document') {
			events.documents.push(`${res.status()} ${url.pathname}`);
		}
	});

	const atPath = (want) => (url) => url.pathname === want;
	const settle = async () => {
		await page.waitForLoadState('load');
		await quiet();
	};

	const rl = readline.createInterface({ input: process.stdin });
	for await (const line of rl) {
		const [cmd, ...rest] = line.trim().split(' ');
		if (cmd !== 'report') note(`command ${line.trim()}`);
		try {
			if (cmd === 'open') {
				await page.goto(new URL(rest[0], base).href, { waitUntil: 'load' });
				await settle();
				out([]);
			} else if (cmd === 'click') {
				const want = rest.pop();
				await page.getByRole('link', { name: rest.join(' '), exact: true }).click();
				await page.waitForURL(atPath(want));
				await settle();
				out([]);
			} else if (cmd === 'back') {
				await page.goBack({ waitUntil: 'commit' });
				await page.waitForURL(atPath(rest[0]));
				await settle();
				out([]);
			} else if (cmd === 'report') {
				const h1 = await page.locator('h1').first().textContent({ timeout: 5_000 }).catch(() => '');
				const text = await page.locator('body').innerText();
				// Hidden marks the e2e scenarios put into a release's pages: which code runs.
				const marks = await page.locator('p[hidden]').allTextContents();
				out([
					`url=${page.url()}`,
					`h1=${oneLine(h1 ?? '')}`,
					`text_length=${text.trim().length}`,
					...marks.map((m) => `mark=${oneLine(m)}`),
					...events.documents.map((d) => `document=${d}`),
					...events.assets.map((a) => `asset=${a}`),
					...events.failed.map((f) => `failed=${oneLine(f)}`),
					...events.errors.map((e) => `error=${e}`),
					...events.warnings.map((w) => `warning=${w}`),
					...events.offsite.map((o) => `offsite=${o}`),
					...events.aborted.map((a) => `aborted=${a}`),
					...events.log.map((l) => `log=${oneLine(l)}`)
				]);
			} else if (cmd === 'reset') {
				reset();
				out([]);
			} else if (cmd === 'quit') {
				break;
			} else {
				out([`fail=unknown command ${oneLine(line)}`]);
			}
		} catch (err) {
			out([`fail=${oneLine(err.message)}`, ...events.log.map((l) => `log=${oneLine(l)}`)]);
		}
	}
	await context.close();
	if (!process.env.INNERCONTEXT_BROWSER_PROFILE) fs.rmSync(profile, { recursive: true, force: true });
	// stdin may still be open (the test keeps its end): do not wait for it.
	process.exit(0);
}

main().catch((err) => {
	process.stdout.write(`fail=${oneLine(err.stack ?? err)}\ndone\n`);
	process.exit(1);
});
