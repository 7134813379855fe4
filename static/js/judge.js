/* The judging page: player controls, the scrubber, flicker and larger view, keyboard, the "?" overlay, the
 * submit gate, heartbeats, timing fields (duration, watched, active), undo and the break reminder.
 * Initialised on page load and again whenever htmx swaps in the next workspace.
 *
 * Module-level state outlives the swaps: the view (flicker, larger; also in localStorage), the active-time
 * clock and the stretch since the last break (also in sessionStorage, so a reload keeps them). */
(function () {
  "use strict";

  const IDLE_MS = 30 * 1000; // a key, pointer or scroll event keeps a person "active" this long
  const TICK_MS = 1000;
  const BREAK_TAKEN_MS = 5 * 60 * 1000; // this long away (hidden or idle) counts as a break
  const STORE_VIEW = "vidpref.view";
  const STORE_ACTIVE = "vidpref.activity";

  let current = null; // {root, player, form, started, heartbeat, activeMs, shown, ...}
  let workspaceTimers = []; // intervals of the workspace on screen (undo countdown)
  // icons are inline SVG: glyphs such as ✓ or ⏸ are missing from many fonts
  const CHECK_ICON =
    '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z"/></svg>';
  const CUP_ICON =
    '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M4 19h16v2H4zM20 3H4v10a4 4 0 0 0 4 4h6a4 4 0 0 0 4-4v-3h2a2 2 0 0 0 2-2V5a2 2 0 0 0-2-2zm0 5h-2V5h2z"/></svg>';

  function load(storage, key, fallback) {
    try {
      const value = JSON.parse(window[storage].getItem(key));
      return value && typeof value === "object" ? { ...fallback, ...value } : fallback;
    } catch (e) {
      return fallback; // storage off (privacy mode) or garbage: start afresh
    }
  }
  function save(storage, key, value) {
    try {
      window[storage].setItem(key, JSON.stringify(value));
    } catch (e) {
      /* storage full or off: the module-level state still holds */
    }
  }

  /* ---- the view: flicker and larger, kept across pairs and reloads ---------------------------------- */
  const view = load("localStorage", STORE_VIEW, { flicker: false, large: false });

  function applyView({ scroll = false } = {}) {
    document.body.classList.toggle("view-large", Boolean(view.large && current));
    if (!current) return;
    const { playerRoot, root } = current;
    playerRoot.classList.toggle("flicker", view.flicker);
    playerRoot.dataset.shown = current.shown;
    const label = playerRoot.querySelector("#flicker-side .side-name");
    if (label) label.textContent = current.shown === "left" ? "Left" : "Right";
    const flickerButton = root.querySelector("#flicker-toggle");
    if (flickerButton) flickerButton.setAttribute("aria-pressed", String(view.flicker));
    const largeButton = root.querySelector("#large-toggle");
    if (largeButton) largeButton.setAttribute("aria-pressed", String(view.large));
    if (scroll) {
      if (view.large) playerRoot.scrollIntoView({ block: "start" });
      else window.scrollTo(0, 0);
    }
    if (current.notePrompt) current.notePrompt();
  }

  function toggleFlicker() {
    view.flicker = !view.flicker;
    current.shown = "left";
    save("localStorage", STORE_VIEW, view);
    applyView({ scroll: view.large }); // the player's height changes with it
  }

  function switchSide() {
    if (!view.flicker) return;
    current.shown = current.shown === "left" ? "right" : "left";
    applyView();
  }

  function toggleLarge() {
    view.large = !view.large;
    save("localStorage", STORE_VIEW, view);
    applyView({ scroll: true });
  }

  /* ---- active time -----------------------------------------------------------------------------------
   * Time counts while the page is visible AND the person is active: a video plays, or there was a key,
   * pointer or scroll event in the last IDLE_MS. accrue() books the interval since its last call under the
   * state that held during it, so it runs before every change of that state and once a second. */
  const stored = load("sessionStorage", STORE_ACTIVE, { stretchMs: 0, lastActiveAt: Date.now(), assignment: null, pairMs: 0 });
  const activity = {
    last: performance.now(),
    lastInput: performance.now(), // loading the page is an act
    visible: document.visibilityState === "visible",
    playing: false,
    stretchMs: stored.stretchMs, // active time since the last break
    lastActiveAt: stored.lastActiveAt, // wall clock, so it survives a reload
    reminderShown: false,
  };

  function accrue() {
    const now = performance.now();
    const from = activity.last;
    activity.last = now;
    if (!current || !activity.visible) return;
    let span = now - from;
    if (!activity.playing) span = Math.min(span, activity.lastInput + IDLE_MS - from);
    if (span <= 0) return;
    if (Date.now() - span - activity.lastActiveAt > BREAK_TAKEN_MS) {
      activity.stretchMs = 0; // away long enough: that was a break
      hideReminder();
    }
    current.activeMs += span;
    activity.stretchMs += span;
    activity.lastActiveAt = Date.now();
  }

  function persistActivity() {
    save("sessionStorage", STORE_ACTIVE, {
      stretchMs: Math.round(activity.stretchMs),
      lastActiveAt: activity.lastActiveAt,
      assignment: current ? current.assignment : null,
      pairMs: current ? Math.round(current.activeMs) : 0,
    });
  }

  let lastNoted = 0;
  function noteInput() {
    const now = performance.now();
    if (now - lastNoted < 250) return; // pointermove fires often; a quarter second is precise enough
    lastNoted = now;
    accrue();
    activity.lastInput = now;
  }
  ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"].forEach((type) =>
    window.addEventListener(type, noteInput, { capture: true, passive: true }),
  );
  document.addEventListener("scroll", noteInput, { capture: true, passive: true });
  document.addEventListener("visibilitychange", () => {
    accrue();
    activity.visible = document.visibilityState === "visible";
    persistActivity();
  });
  window.addEventListener("pagehide", () => {
    accrue();
    persistActivity();
  });

  /* ---- the break reminder ------------------------------------------------------------------------------ */
  function reminder() {
    let banner = document.getElementById("break-reminder");
    if (!banner) {
      banner = document.createElement("div");
      banner.id = "break-reminder";
      banner.className = "break-reminder";
      banner.setAttribute("role", "status");
      banner.hidden = true;
      banner.innerHTML =
        `${CUP_ICON}<p><strong>Time for a short break?</strong> <span class="break-text"></span></p>` +
        '<button type="button" data-action="dismiss-break">Dismiss <kbd>Esc</kbd></button>';
      banner.querySelector("[data-action=dismiss-break]").addEventListener("click", dismissReminder);
      // in the top bar beside the account (a wide screen shows it there, over nothing); a phone pins it to the bottom
      const topbar = document.querySelector(".topbar");
      if (topbar) topbar.insertBefore(banner, topbar.querySelector(".logout"));
      else document.body.appendChild(banner);
    }
    return banner;
  }

  function breakEveryMs() {
    // read at check time, so a changed setting (or a test) applies at once
    const workspace = document.getElementById("workspace");
    const minutes = workspace ? parseFloat(workspace.dataset.breakEveryMin) : 0;
    return minutes > 0 ? minutes * 60 * 1000 : 0;
  }

  function checkBreak() {
    const every = breakEveryMs();
    if (!every || activity.reminderShown || activity.stretchMs < every) return;
    const banner = reminder();
    banner.hidden = false;
    activity.reminderShown = true;
    const minutes = Math.max(1, Math.round(activity.stretchMs / 60000));
    banner.querySelector(".break-text").textContent = `${minutes} min of judging since the last one.`;
  }

  function hideReminder() {
    const banner = document.getElementById("break-reminder");
    if (banner) banner.hidden = true;
    activity.reminderShown = false;
  }

  function dismissReminder() {
    hideReminder();
    activity.stretchMs = 0; // a new stretch starts now
    persistActivity();
  }

  setInterval(() => {
    accrue();
    checkBreak();
    persistActivity();
  }, TICK_MS);

  /* ---- the pair on screen ------------------------------------------------------------------------------ */
  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function teardown() {
    accrue(); // the last of the old pair's time
    workspaceTimers.forEach(clearInterval);
    workspaceTimers = [];
    if (current && current.heartbeat) clearInterval(current.heartbeat);
    if (current && current.player) current.player.pause();
    if (current && current.help && current.help.open) current.help.close();
    current = null;
    activity.playing = false;
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

  /* Undo is offered for a few seconds after a judgment: count them down, then take the offer away. */
  function initUndo(workspace) {
    const box = workspace.querySelector("#undo");
    const left = workspace.querySelector("#undo-left");
    if (!box || !left) return;
    const until = performance.now() + (parseInt(left.dataset.secondsLeft, 10) || 0) * 1000;
    const show = () => {
      const seconds = Math.ceil((until - performance.now()) / 1000);
      if (seconds <= 0) {
        box.hidden = true;
        workspace.classList.remove("has-undo");
        workspaceTimers.forEach(clearInterval);
        return;
      }
      left.textContent = seconds >= 60 ? `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")} left` : `${seconds} s left`;
    };
    show();
    workspaceTimers.push(setInterval(show, 500));
  }

  function undo() {
    const form = document.getElementById("undo-form");
    if (!form || form.closest("[hidden]") || form.dataset.sent) return false;
    form.dataset.sent = "true"; // one undo per offer, however often U is pressed
    form.requestSubmit();
    return true;
  }

  function fillTimings() {
    accrue();
    const { form, player } = current;
    const timings = {
      duration_ms: Math.round(performance.now() - current.started),
      watched_ms: Math.round(player.watchedMs),
      active_ms: Math.round(current.activeMs),
    };
    Object.entries(timings).forEach(([name, value]) => {
      const input = form.querySelector(`input[name=${name}]`);
      if (input) input.value = String(value);
    });
    return timings;
  }

  function init(root) {
    teardown();
    const workspace = root.id === "workspace" ? root : root.querySelector && root.querySelector("#workspace");
    if (!workspace) return;
    initUndo(workspace);
    if (!workspace.dataset.assignment) {
      applyView();
      return;
    }
    const playerRoot = workspace.querySelector(".player");
    const player = new window.VidPref.SyncPlayer(playerRoot);
    const form = workspace.querySelector("#judge-form");
    const assignment = workspace.dataset.assignment;
    current = {
      root: workspace,
      playerRoot,
      player,
      form,
      assignment,
      started: performance.now(),
      requireFullView: workspace.dataset.requireFullView === "true",
      // a reload (or a form sent back with an error) of the same pair keeps its active time
      activeMs: stored.assignment === assignment ? stored.pairMs : 0,
      shown: "left",
      help: workspace.querySelector("#keyboard-help"),
    };
    stored.assignment = null; // restored once
    activity.last = performance.now();
    activity.lastInput = performance.now(); // the next pair arriving is part of the work
    window.VidPref.player = player;

    const toggle = workspace.querySelector("#play-toggle");
    const clock = workspace.querySelector("#clock");
    const rateButton = workspace.querySelector("[data-action=rate]");
    const loopBox = workspace.querySelector("[data-action=loop]");
    const scrubber = workspace.querySelector("#scrubber");
    const counter = workspace.querySelector("#frame-counter");
    let dragging = false;
    const showTime = (t) => {
      clock.textContent = `${t.toFixed(2)} s`;
      const count = player.frameCount();
      counter.textContent = `${Math.min(count, player.frameAt(t) + 1)} / ${count}`;
      if (!dragging) scrubber.value = String(t);
    };
    const noteDuration = () => {
      if (!player.duration) return;
      scrubber.max = String(player.duration);
      scrubber.disabled = false;
      showTime(player.currentTime);
    };
    player.addEventListener("state", (e) => {
      // the button holds both icons and labels; CSS shows the pair for the current state
      accrue();
      activity.playing = e.detail.playing;
      toggle.dataset.playing = String(e.detail.playing);
      playerRoot.dataset.playing = String(e.detail.playing);
    });
    player.addEventListener("time", (e) => showTime(e.detail.t));
    player.addEventListener("ready", noteDuration);
    player.addEventListener("rate", (e) => (rateButton.textContent = `${e.detail.rate}×`));
    player.addEventListener("loop", (e) => (loopBox.checked = e.detail.loop));
    player.addEventListener("watched", updateGate);
    if (player.videos.every((v) => v.readyState >= 1)) noteDuration();

    // the scrubber: a drag or a click puts both videos on the same frame (SyncPlayer.seekTo snaps it)
    scrubber.addEventListener("pointerdown", () => (dragging = true));
    ["pointerup", "pointercancel", "blur"].forEach((type) => scrubber.addEventListener(type, () => (dragging = false)));
    scrubber.addEventListener("input", () => player.seekTo(parseFloat(scrubber.value)));
    scrubber.addEventListener("change", () => {
      dragging = false;
      showTime(player.currentTime);
    });

    workspace.querySelector("[data-action=toggle]").addEventListener("click", () => player.toggle());
    workspace.querySelector("[data-action=step-back]").addEventListener("click", () => player.step(-1));
    workspace.querySelector("[data-action=step-forward]").addEventListener("click", () => player.step(1));
    rateButton.addEventListener("click", () => player.setRate(player.rate === 1 ? 0.5 : 1));
    loopBox.addEventListener("change", (e) => player.setLoop(e.target.checked));
    workspace.querySelector("[data-action=flicker]").addEventListener("click", toggleFlicker);
    workspace.querySelector("[data-action=switch-side]").addEventListener("click", switchSide);
    workspace.querySelector("[data-action=large]").addEventListener("click", toggleLarge);
    workspace.querySelector("[data-action=help]").addEventListener("click", () => current.help.showModal());
    // in flicker mode a click or tap on the video shows the other side
    playerRoot.querySelectorAll("figure").forEach((figure) => figure.addEventListener("click", switchSide));

    form.addEventListener("change", updateGate);
    const extras = form.querySelector(".extras");
    if (extras) {
      // a dot on "Comment or flag" while either holds something, so a closed panel does not hide it
      extras.addEventListener("input", () =>
        extras.classList.toggle("has-value", Array.from(extras.querySelectorAll("textarea, select")).some((el) => el.value.trim() !== "")),
      );
    }
    form.addEventListener("submit", fillTimings); // a plain (non-htmx) post carries them in the hidden inputs
    form.addEventListener("htmx:configRequest", (e) => Object.assign(e.detail.parameters, fillTimings()));

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
    applyView({ scroll: view.large });
    updateGate();
  }

  /* ---- keys (the "?" overlay in _workspace.html lists them all) ----------------------------------------- */
  function typing(target) {
    if (!target) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && !["radio", "checkbox", "range", "button", "submit", "reset", "hidden"].includes(target.type);
  }

  function onKey(event) {
    if (current && current.help && current.help.open) {
      // the overlay is modal: only "?" (and Escape, which the dialog handles itself) act while it is open
      if (event.key === "?") {
        event.preventDefault();
        current.help.close();
      }
      return;
    }
    if (event.key === "Escape") {
      const extras = current && current.form.querySelector(".extras[open]");
      if (extras) {
        extras.open = false;
        extras.querySelector("summary").focus();
        return;
      }
      if (activity.reminderShown) dismissReminder();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const key = event.key.toLowerCase();
    if (key === "u") {
      if (undo()) event.preventDefault();
      return;
    }
    if (!current) return;
    const { player, form } = current;
    const onRadio = event.target && event.target.type === "radio";
    switch (key) {
      case " ":
        event.preventDefault();
        player.toggle();
        return;
      case ",":
        player.step(-1);
        return;
      case ".":
        player.step(1);
        return;
      case "arrowleft":
      case "arrowright": {
        if (onRadio) return; // arrows move between a focused row's choices, as radios do
        event.preventDefault();
        const sign = key === "arrowleft" ? -1 : 1;
        if (event.shiftKey) player.seekTo(player.currentTime + sign, { keepPlaying: true });
        else player.step(sign);
        return;
      }
      case "home":
        event.preventDefault();
        player.seekTo(0);
        return;
      case "end":
        event.preventDefault();
        player.seekTo(player.duration);
        return;
      case "r":
        player.setRate(player.rate === 1 ? 0.5 : 1);
        return;
      case "l":
        player.setLoop(!player.loop);
        return;
      case "f":
        toggleFlicker();
        return;
      case "g":
        switchSide();
        return;
      case "v":
        toggleLarge();
        return;
      case "?":
        event.preventDefault();
        current.help.showModal();
        return;
      case "n": {
        event.preventDefault(); // or the "n" lands in the comment
        const extras = form.querySelector(".extras");
        extras.open = true;
        extras.querySelector("textarea").focus();
        return;
      }
      case "enter": {
        // a focused Skip, Undo or "Comment or flag" keeps its own Enter
        if (event.target.closest && event.target.closest("form.skip, #undo-form, summary")) return;
        event.preventDefault();
        const button = form.querySelector("#submit-judgment");
        if (!button.disabled) form.requestSubmit(button);
        return;
      }
      default: {
        const radio = form.querySelector(`input[type=radio][data-key="${CSS.escape(key)}"]`);
        if (radio) {
          event.preventDefault();
          radio.checked = true;
          updateGate();
        }
      }
    }
  }

  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => current && current.notePrompt && current.notePrompt());

  window.VidPref = window.VidPref || {};
  // read-only views for tests and for the curious
  window.VidPref.activity = () => ({
    activeMs: current ? (accrue(), Math.round(current.activeMs)) : 0,
    stretchMs: Math.round(activity.stretchMs),
    reminderShown: activity.reminderShown,
  });
  window.VidPref.view = () => ({ flicker: view.flicker, large: view.large, shown: current ? current.shown : null });

  document.addEventListener("DOMContentLoaded", () => {
    init(document.body);
    document.body.addEventListener("htmx:afterSwap", (e) => init(e.detail.elt));
  });
})();
