/* Two <video> elements on one master clock.
 *
 * The longer video is the master; the other follows it. Play, pause, seek, frame step and speed act on
 * both; while playing, a frame callback keeps the follower within one frame of the master (a hard seek
 * when it drifts further). Looping is driven here rather than by the elements, so both restart together
 * even when their durations differ. "Watched" means each video reached its end at least once.
 */
(function () {
  "use strict";

  class SyncPlayer extends EventTarget {
    constructor(root) {
      super();
      this.root = root;
      this.videos = Array.from(root.querySelectorAll("video.synced"));
      this.fps = parseFloat(root.dataset.fps) || 24;
      this.loop = true;
      this.rate = 1;
      this.watched = new Set();
      this.watchedMs = 0;
      this._lastTick = null;
      this._running = false;
      this.videos.forEach((video) => {
        video.loop = false;
        video.addEventListener("timeupdate", () => this._noteProgress(video));
        video.addEventListener("ended", () => this._onEnded(video));
        video.addEventListener("loadedmetadata", () => this._emit("ready"));
      });
    }

    get master() {
      return this.videos.reduce((a, b) => ((b.duration || 0) > (a.duration || 0) ? b : a));
    }
    get followers() {
      const master = this.master;
      return this.videos.filter((v) => v !== master);
    }
    get playing() {
      return this.videos.some((v) => !v.paused && !v.ended);
    }
    get currentTime() {
      return this.master.currentTime || 0;
    }
    get frame() {
      return 1 / this.fps;
    }

    _emit(name, detail) {
      this.dispatchEvent(new CustomEvent(name, { detail }));
    }

    _noteProgress(video) {
      if (video.duration && video.currentTime >= video.duration - Math.max(0.1, this.frame * 1.5)) {
        this._markWatched(video);
      }
      this._emit("time", { t: this.currentTime });
    }

    _markWatched(video) {
      if (this.watched.has(video)) return;
      this.watched.add(video);
      if (this.watched.size === this.videos.length) this._emit("watched");
    }

    _onEnded(video) {
      this._markWatched(video);
      if (video !== this.master) return; // the shorter one waits at its end for the master
      if (this.loop) {
        this.seek(0);
        this.play();
      } else {
        this._stopClock();
        this._emit("state", { playing: false });
      }
    }

    async play() {
      const t = this.currentTime;
      this.videos.forEach((v) => {
        v.playbackRate = this.rate;
        const target = Math.min(t, (v.duration || t) - 0.001);
        if (Math.abs(v.currentTime - target) > this.frame / 2) v.currentTime = Math.max(0, target);
      });
      await Promise.all(this.videos.map((v) => v.play().catch(() => undefined)));
      this._startClock();
      this._emit("state", { playing: true });
    }

    pause() {
      this.videos.forEach((v) => v.pause());
      this._stopClock();
      this.seek(this.currentTime);
      this._emit("state", { playing: false });
    }

    toggle() {
      return this.playing ? this.pause() : this.play();
    }

    seek(t) {
      this.videos.forEach((v) => {
        const end = v.duration || t;
        v.currentTime = Math.max(0, Math.min(t, end));
      });
      this._emit("time", { t });
    }

    step(frames) {
      if (this.playing) this.pause();
      const duration = this.master.duration || 0;
      const t = Math.max(0, Math.min(duration, this.currentTime + frames * this.frame));
      this.seek(t);
    }

    setRate(rate) {
      this.rate = rate;
      this.videos.forEach((v) => (v.playbackRate = rate));
      this._emit("rate", { rate });
    }

    setLoop(loop) {
      this.loop = loop;
    }

    /* Drift: how far each follower is from where it should be, in seconds. */
    drift() {
      const t = this.currentTime;
      return this.followers.map((v) => Math.abs(v.currentTime - Math.min(t, v.duration || t)));
    }

    _startClock() {
      if (this._running) return;
      this._running = true;
      this._lastTick = performance.now();
      const tick = () => {
        if (!this._running) return;
        const now = performance.now();
        if (this.playing) this.watchedMs += now - this._lastTick;
        this._lastTick = now;
        const t = this.currentTime;
        this.followers.forEach((v) => {
          const target = Math.min(t, v.duration || t);
          const gap = v.currentTime - target;
          if (v.ended || (v.duration && target >= v.duration - 0.001)) return;
          if (Math.abs(gap) > this.frame) {
            v.currentTime = target;
          } else if (Math.abs(gap) > this.frame / 3) {
            // small drift: lean on the rate instead of seeking (a seek stalls decoding)
            v.playbackRate = this.rate * (gap > 0 ? 0.95 : 1.05);
          } else if (v.playbackRate !== this.rate) {
            v.playbackRate = this.rate;
          }
        });
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }

    _stopClock() {
      this._running = false;
    }
  }

  window.VidPref = window.VidPref || {};
  window.VidPref.SyncPlayer = SyncPlayer;
})();
