// The listening page: search, pick a track, hear it and its neighbours.
// State lives in the URL hash (#/track/<id>), so each neighbour's link to
// its own neighbours is an ordinary link and the back button works.
"use strict";

const $ = (id) => document.getElementById(id);

function status(text) {
  $("status").textContent = text || "";
}

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function trackLink(track) {
  return "#/track/" + encodeURIComponent(track.track_id);
}

function describe(track) {
  return [track.genre, track.label, track.catalogue_number, track.release_date]
    .filter((part) => part)
    .join(" · ");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function search(query) {
  status("Searching…");
  const body = await getJson("/api/tracks?q=" + encodeURIComponent(query) + "&limit=20");
  const list = $("result-list");
  list.replaceChildren();
  for (const track of body.tracks) {
    const item = element("li", "result");
    const link = element("a", "", track.artist + " - " + track.track_name);
    link.href = trackLink(track);
    item.append(link, element("span", "meta", " " + describe(track)));
    list.append(item);
  }
  $("results").hidden = false;
  status(body.tracks.length ? "" : "No track matches “" + query + "”.");
  if (body.tracks.length === 1) location.hash = trackLink(body.tracks[0]);
}

async function showTrack(id) {
  status("Loading…");
  const diverse = $("diverse").checked;
  const body = await getJson(
    "/api/tracks/" + encodeURIComponent(id) + "/similar?k=10&diverse=" + diverse
  );
  const track = body.track;
  $("chosen-title").textContent = track.artist + " - " + track.track_name;
  $("chosen-meta").textContent = [track.release_title, describe(track)].filter((p) => p).join(" — ");
  $("chosen-player").src = track.preview;
  const image = $("chosen-spectrogram");
  image.hidden = false;
  $("spectrogram-note").hidden = true;
  image.onerror = () => {
    image.hidden = true;
    $("spectrogram-note").hidden = false;
  };
  image.src = track.spectrogram;
  $("chosen").hidden = false;

  const list = $("neighbour-list");
  list.replaceChildren();
  for (const neighbour of body.neighbours) {
    const item = element("li", "neighbour");
    item.dataset.trackId = neighbour.track_id;
    const head = element("div", "neighbour-head");
    const score = element("span", "score", neighbour.score.toFixed(3));
    score.style.setProperty("--score", Math.max(0, neighbour.score));
    const name = element("span", "name", neighbour.artist + " - " + neighbour.track_name);
    const link = element("a", "more", "its neighbours →");
    link.href = trackLink(neighbour);
    head.append(score, name, link);
    const meta = element("div", "meta", describe(neighbour));
    const player = element("audio");
    player.controls = true;
    player.preload = "metadata";
    player.src = neighbour.preview;
    item.append(head, meta, player);
    list.append(item);
  }
  $("neighbours").hidden = false;
  if (!body.neighbours.length) {
    status("No neighbours for this track.");
  } else if (body.neighbours.length < body.k) {
    status(
      "Showing " + body.neighbours.length + " of " + body.k + ": the table stores " + body.stored +
        " neighbours per track" + (body.diverse ? ", and repeats of an artist or release are skipped." : ".")
    );
  } else {
    status("");
  }
}

function route() {
  const match = location.hash.match(/^#\/track\/(.+)$/);
  if (match) showTrack(decodeURIComponent(match[1])).catch((err) => status(err.message));
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("search").value.trim();
  if (query) search(query).catch((err) => status(err.message));
});
$("diverse").addEventListener("change", route);
window.addEventListener("hashchange", route);
route();
