/* Two <video> elements on one master clock.
 *
 * The longer video is the master; the other follows it. Play, pause, seek, frame step and speed act on
 * both; while playing, a frame callback keeps the follower within one frame of the master (a hard seek
 * when it drifts further). Looping is driven here rather than by the elements, so both restart together
 * even when their durations differ. "Watched" means each video reached its end at least once while playing,
 * after playing time of at least 90 % of its length (a seek to the end, or a jump there and one frame of play,
 * does not count).
 *
 * Frames: every paused position is the middle of a frame of the master's frame grid, (n + 0.5) / fps, so a
 * seek never lands on a boundary where a decoder may show either neighbour. seekTo (the scrubber, Home,
 * End, ±1 s) and step (one frame) share that code: frameAt, frameTime and seekFrame.
 */
(function () {
  "use strict";

  class SyncPlayer extends EventTarget {
    constructor(root) {
      super();
      this.root = root;
      this.videos = Array.from(root.querySelectorAll("video.synced"));
      // frames per second of each video: data-fps is the left (first) one's, data-fps-right the right one's
      const fpsLeft = parseFloat(root.dataset.fps) || 24;
      const fpsRight = parseFloat(root.dataset.fpsRight) || fpsLeft;
      this._fps = new Map(this.videos.map((v, i) => [v, i === 0 ? fpsLeft : fpsRight]));
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
    get duration() {
      return this.master.duration || 0;
    }
    /* the clock's frame rate: the master's */
    get fps() {
      return this.fpsOf(this.master);
    }
    get frame() {
      return 1 / this.fps;
    }
    fpsOf(video) {
      return this._fps.get(video) || 24;
    }
    /* frames in a video (the master's by default); at least one */
    frameCount(video = this.master) {
      return Math.max(1, Math.round((video.duration || 0) * this.fpsOf(video)));
    }
    /* the master's frame shown at time t, and the middle of frame n */
    frameAt(t) {
      return Math.floor(t * this.fps + 1e-6);
    }
    frameTime(n) {
      return (n + 0.5) / this.fps;
    }
    /* the middle of a video's last frame: the latest time a paused video is sent to */
    _lastFrameTime(video) {
      return (this.frameCount(video) - 0.5) / this.fpsOf(video);
    }

    _emit(name, detail) {
      this.dispatchEvent(new CustomEvent(name, { detail }));
    }

    _noteProgress(video) {
      if (!video.paused && video.duration && video.currentTime >= video.duration - Math.max(0.1, this.frame * 1.5)) {
        this._markWatched(video);
      }
      this._emit("time", { t: this.currentTime });
    }

    _markWatched(video) {
      if (this.watched.has(video)) return;
      // played for (nearly) its length in all: a jump to the end and one frame of play is not a watch
      if (this.watchedMs < 900 * (video.duration || 0)) return;
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
      this.seekFrame(this.frameAt(this.currentTime)); // both on the middle of the frame the master shows
      this._emit("state", { playing: false });
    }

    toggle() {
      return this.playing ? this.pause() : this.play();
    }

    /* Both videos to time t as it is (a shorter video waits on its last frame). */
    seek(t) {
      this.videos.forEach((v) => {
        const end = v.duration ? this._lastFrameTime(v) : t;
        v.currentTime = Math.max(0, Math.min(t, end));
      });
      this._emit("time", { t });
    }

    /* Both videos to the middle of the master's frame n (clamped to the first and last frame). */
    seekFrame(n) {
      const last = this.frameCount() - 1;
      this.seek(this.frameTime(Math.max(0, Math.min(last, n))));
    }

    /* Paused on the frame at time t: the scrubber, Home, End and ±1 s. While playing, ±1 s keeps playing. */
    seekTo(t, { keepPlaying = false } = {}) {
      if (this.playing) {
        if (keepPlaying) {
          this.seek(Math.max(0, Math.min(t, this.duration)));
          return;
        }
        this.pause();
      }
      this.seekFrame(this.frameAt(t));
    }

    /* One frame (or several) forward or back, paused. */
    step(frames) {
      if (this.playing) this.pause();
      this.seekFrame(this.frameAt(this.currentTime) + frames);
    }

    setRate(rate) {
      this.rate = rate;
      this.videos.forEach((v) => (v.playbackRate = rate));
      this._emit("rate", { rate });
    }

    setLoop(loop) {
      this.loop = loop;
      this._emit("loop", { loop });
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
        this._emit("time", { t }); // smooth for the scrubber and the clock (timeupdate comes ~4 times a second)
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
