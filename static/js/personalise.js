/* The personalisation page: each weight slider shows its value; a finished preview's two videos play in sync
 * (VidPref.SyncPlayer from player.js), started on load and again whenever htmx swaps a new preview in. */
(function () {
  "use strict";

  let player = null;
  // inline SVG: the ⏸ and ▶ glyphs are missing from many fonts and show as a box
  const icon = (path) => `<svg width="14" height="14" viewBox="0 0 24 24" fill="currentColor" aria-hidden="true" ` +
    `focusable="false" style="vertical-align:-2px"><path d="${path}"/></svg>`;
  const PLAY = icon("M7 4.5v15l12.5-7.5z") + " Play";
  const PAUSE = icon("M6 4.5h4.5v15H6zm7.5 0H18v15h-4.5z") + " Pause";

  function showValue(slider) {
    const output = document.getElementById(slider.id + "-value");
    if (output) output.textContent = Number(slider.value).toFixed(1);
  }

  function initPlayer() {
    const root = document.querySelector(".preview-player");
    if (!root || root.dataset.ready) return;
    if (player) player.pause();
    root.dataset.ready = "true";
    player = new window.VidPref.SyncPlayer(root);
    window.VidPref.previewPlayer = player;
    const panel = root.closest("#preview-live");
    const toggle = panel.querySelector("[data-action=toggle]");
    const clock = panel.querySelector(".preview-clock");
    player.addEventListener("state", (e) => (toggle.innerHTML = e.detail.playing ? PAUSE : PLAY));
    player.addEventListener("time", (e) => (clock.textContent = `${e.detail.t.toFixed(2)} s`));
    toggle.addEventListener("click", () => player.toggle());
    panel.querySelector("[data-action=loop]").addEventListener("change", (e) => player.setLoop(e.target.checked));
    player.play();  // muted: browsers allow it without a gesture
  }

  document.addEventListener("input", (event) => {
    if (event.target.matches("#preview-form input[type=range]")) showValue(event.target);
  });
  document.addEventListener("DOMContentLoaded", initPlayer);
  document.addEventListener("htmx:afterSettle", initPlayer);
})();
