/* The judging page: player controls, keyboard, the submit gate, heartbeats, timing fields.
 * Initialised on page load and again whenever htmx swaps in the next pair. */
(function () {
  "use strict";

  let current = null; // {root, player, form, started, heartbeat}
  // icons are inline SVG: glyphs such as ✓ or ⏸ are missing from many fonts
  const CHECK_ICON =
    '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z"/></svg>';

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function teardown() {
    if (current && current.heartbeat) clearInterval(current.heartbeat);
    if (current && current.player) current.player.pause();
    current = null;
  }

  function updateGate() {
    if (!current || !current.form) return;
    const { form, player, requireFullView } = current;
    const rows = Array.from(form.querySelectorAll("fieldset.row"));
    const missing = rows.filter((row) => !row.querySelector("input:checked")).map((row) => row.querySelector("legend").textContent);
    const watched = !requireFullView || player.watched.size === player.videos.length;
    const button = form.querySelector("#submit-judgment");
    button.disabled = !(watched && missing.length === 0);
    const hint = form.querySelector("#submit-hint");
    hint.textContent = !watched ? "Watch both videos to the end to submit." : missing.length ? `Still to choose: ${missing.join(", ")}.` : "";
    const state = document.getElementById("watched-state");
    if (state && requireFullView) {
      if (watched) state.innerHTML = `${CHECK_ICON} both watched`;
      else state.textContent = `watched ${player.watched.size} of ${player.videos.length}`;
    }
  }

  function init(root) {
    teardown();
    const workspace = root.id === "workspace" ? root : root.querySelector && root.querySelector("#workspace");
    if (!workspace || !workspace.dataset.assignment) return;
    const playerRoot = workspace.querySelector(".player");
    const player = new window.VidPref.SyncPlayer(playerRoot);
    const form = workspace.querySelector("#judge-form");
    current = {
      root: workspace,
      player,
      form,
      started: performance.now(),
      requireFullView: workspace.dataset.requireFullView === "true",
    };
    window.VidPref.player = player;

    const toggle = workspace.querySelector("#play-toggle");
    const clock = workspace.querySelector("#clock");
    const rateButton = workspace.querySelector("[data-action=rate]");
    player.addEventListener("state", (e) => {
      // the button holds both icons and labels; CSS shows the pair for the current state
      toggle.dataset.playing = String(e.detail.playing);
      playerRoot.dataset.playing = String(e.detail.playing);
    });
    player.addEventListener("time", (e) => (clock.textContent = `${e.detail.t.toFixed(2)} s`));
    player.addEventListener("rate", (e) => (rateButton.textContent = `${e.detail.rate}×`));
    player.addEventListener("watched", updateGate);
    workspace.querySelector("[data-action=toggle]").addEventListener("click", () => player.toggle());
    workspace.querySelector("[data-action=step-back]").addEventListener("click", () => player.step(-1));
    workspace.querySelector("[data-action=step-forward]").addEventListener("click", () => player.step(1));
    rateButton.addEventListener("click", () => player.setRate(player.rate === 1 ? 0.5 : 1));
    workspace.querySelector("[data-action=loop]").addEventListener("change", (e) => player.setLoop(e.target.checked));
    form.addEventListener("change", updateGate);
    const extras = form.querySelector(".extras");
    if (extras) {
      // a dot on "Comment or flag" while either holds something, so a closed panel does not hide it
      extras.addEventListener("input", () =>
        extras.classList.toggle("has-value", Array.from(extras.querySelectorAll("textarea, select")).some((el) => el.value.trim() !== "")),
      );
    }
    form.addEventListener("htmx:configRequest", (e) => {
      e.detail.parameters.duration_ms = Math.round(performance.now() - current.started);
      e.detail.parameters.watched_ms = Math.round(player.watchedMs);
    });

    const promptText = workspace.querySelector("#prompt-text");
    if (promptText) {
      // a long prompt scrolls inside its box; fade its last line while there is more below
      current.notePrompt = () =>
        promptText.classList.toggle("more-below", promptText.scrollTop + promptText.clientHeight < promptText.scrollHeight - 2);
      promptText.addEventListener("scroll", current.notePrompt, { passive: true });
      current.notePrompt();
    }

    const every = (parseInt(workspace.dataset.heartbeatS, 10) || 60) * 1000;
    current.heartbeat = setInterval(() => {
      fetch(workspace.dataset.heartbeatUrl, { method: "POST", headers: { "X-CSRFToken": csrfToken() }, credentials: "same-origin" });
    }, every);
    updateGate();
  }

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" || (target.tagName === "INPUT" && target.type === "text"));
  }

  document.addEventListener("keydown", (event) => {
    if (current && event.key === "Escape") {
      const extras = current.form.querySelector(".extras[open]");
      if (extras) {
        extras.open = false;
        extras.querySelector("summary").focus();
        return;
      }
    }
    if (!current || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const { player, form } = current;
    const key = event.key.toLowerCase();
    if (key === " ") {
      event.preventDefault();
      player.toggle();
    } else if (key === ",") {
      player.step(-1);
    } else if (key === ".") {
      player.step(1);
    } else if (key === "enter") {
      event.preventDefault();
      const button = form.querySelector("#submit-judgment");
      if (!button.disabled) form.requestSubmit(button);
    } else {
      const radio = form.querySelector(`input[type=radio][data-key="${CSS.escape(key)}"]`);
      if (radio) {
        event.preventDefault();
        radio.checked = true;
        updateGate();
      }
    }
  });

  window.addEventListener("resize", () => current && current.notePrompt && current.notePrompt());

  document.addEventListener("DOMContentLoaded", () => {
    init(document.body);
    document.body.addEventListener("htmx:afterSwap", (e) => init(e.detail.elt));
  });
})();
