// Headless Chromium test of the listening page: start the fixture server
// (a small synthetic catalogue with WAV previews) on loopback, search, open a
// track, check that every player has a playable source, follow a
// neighbour's link to its own neighbours, and keep a screenshot.
//
//   cd tests/browser && npm ci && npm test
//
// CHROMIUM overrides the browser path (default /usr/bin/chromium).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const artifacts = path.join(root, "tests/artifacts/browser");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

let server;
let browser;
let baseUrl;

async function startFixtureServer() {
  execFileSync("cargo", ["build", "-q", "-p", "deepcuts-server", "--example", "fixture_server"], {
    cwd: root,
    stdio: "inherit",
  });
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, "target");
  const binary = path.join(targetDir, "debug/examples/fixture_server");
  const dir = mkdtempSync(path.join(tmpdir(), "deepcuts-browser-"));
  const child = spawn(binary, ["--dir", dir, "--listen", "127.0.0.1:0"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const url = await new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error("fixture server did not start in 60 s")), 60_000);
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      const match = seen.match(/listening (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`fixture server exited with ${code}`)));
  });
  return { child, url };
}

/** Every <audio> on the page: its src loads as audio and the element has metadata. */
async function checkPlayers(page, expected) {
  await page.waitForFunction(
    (n) => {
      const players = [...document.querySelectorAll("audio")].filter((a) => a.src);
      return players.length >= n && players.every((a) => a.readyState >= 1 || a.error);
    },
    expected,
    { timeout: 20_000 },
  );
  const players = await page.$$eval("audio", (all) =>
    all.filter((a) => a.src).map((a) => ({ src: a.src, readyState: a.readyState, error: a.error && a.error.code })),
  );
  assert.ok(players.length >= expected, `expected ${expected} players, found ${players.length}`);
  for (const player of players) {
    assert.equal(player.error, null, `player ${player.src} failed with media error ${player.error}`);
    assert.ok(player.readyState >= 1, `player ${player.src} has no metadata`);
    const fetched = await page.evaluate(async (src) => {
      const response = await fetch(src);
      return { status: response.status, type: response.headers.get("content-type"), bytes: (await response.arrayBuffer()).byteLength };
    }, player.src);
    assert.equal(fetched.status, 200, `${player.src} answered ${fetched.status}`);
    assert.match(fetched.type, /^audio\//, `${player.src} is ${fetched.type}`);
    assert.ok(fetched.bytes > 1000, `${player.src} is only ${fetched.bytes} bytes`);
  }
  return players;
}

before(async () => {
  assert.ok(existsSync(executablePath), `no Chromium at ${executablePath}`);
  ({ child: server, url: baseUrl } = await startFixtureServer());
  // playwright gives each launch a fresh temporary profile (--user-data-dir).
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill();
});

test("search, listen, and follow a neighbour to its own neighbours", async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  const consoleErrors = [];
  page.on("pageerror", (err) => consoleErrors.push(err.message));
  await page.goto(baseUrl);

  await page.fill("#search", "dub assembly - low freq");
  await page.click("button[type=submit]");
  await page.waitForSelector("#result-list li a");
  const firstResult = await page.textContent("#result-list li a");
  assert.match(firstResult, /Dub Assembly - Low Freq/i);
  await page.click("#result-list li a");

  await page.waitForSelector("#neighbour-list li.neighbour");
  assert.match(await page.textContent("#chosen-title"), /^Dub Assembly - Low Freq/);
  const neighbours = await page.$$eval("#neighbour-list li.neighbour", (items) =>
    items.map((li) => ({ id: li.dataset.trackId, score: Number(li.querySelector(".score").textContent) })),
  );
  assert.equal(neighbours.length, 8, "the fixture table stores 8 neighbours");
  for (let i = 1; i < neighbours.length; i++) {
    assert.ok(neighbours[i - 1].score >= neighbours[i].score, "neighbours are sorted by score");
  }
  await checkPlayers(page, 1 + neighbours.length);
  // Without a renderer the spectrogram route is a clear 404 and the page says so.
  await page.waitForSelector("#spectrogram-note:not([hidden])");

  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, "listening-page.png"), fullPage: true });

  // Follow the first neighbour's link: the page now shows *its* neighbours.
  const chosenId = await page.evaluate(() => decodeURIComponent(location.hash.split("/").pop()));
  await page.click("#neighbour-list li.neighbour:first-child a.more");
  await page.waitForFunction((id) => location.hash.endsWith(encodeURIComponent(id)), neighbours[0].id);
  await page.waitForFunction(
    (id) => document.querySelector("#neighbour-list li.neighbour") && ![...document.querySelectorAll("#neighbour-list li")].some((li) => li.dataset.trackId === id),
    neighbours[0].id,
  );
  const second = await page.$$eval("#neighbour-list li.neighbour", (items) => items.map((li) => li.dataset.trackId));
  assert.ok(second.length > 0);
  assert.ok(second.includes(chosenId), "the relation goes both ways for the nearest neighbour here");
  await checkPlayers(page, 1 + second.length);

  // Diversity: at most one track per artist and per release.
  await page.check("#diverse");
  await page.waitForFunction(() => document.querySelectorAll("#neighbour-list li.neighbour").length < 8);
  const artists = await page.$$eval("#neighbour-list li.neighbour .name", (names) => names.map((n) => n.textContent.split(" - ")[0]));
  assert.equal(new Set(artists).size, artists.length, "diverse list repeats an artist");
  assert.match(await page.textContent("#status"), /the table stores 8 neighbours per track/);
  await page.screenshot({ path: path.join(artifacts, "listening-page-diverse.png"), fullPage: true });

  assert.deepEqual(consoleErrors, []);
});
