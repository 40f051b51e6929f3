// Audio worklets of the agent page's test call: the microphone as PCM16 frames at the
// context's rate (24 kHz), and playback of the agent's PCM16 audio from a queue that a
// barge-in clears. Loaded from this origin (CSP script-src 'self').
"use strict";

const FRAME = 480; // 20 ms at 24 kHz

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) { return true; }
    for (let i = 0; i < channel.length; i++) {
      const sample = Math.max(-1, Math.min(1, channel[i]));
      this.frame[this.filled++] = sample < 0 ? sample * 0x8000 : sample * 0x7fff;
      if (this.filled === FRAME) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
        this.frame = new Int16Array(FRAME);
        this.filled = 0;
      }
    }
    return true;
  }
}

class Playback extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = new Float32Array(24000 * 60); // up to a minute of agent audio ahead
    this.read = 0;
    this.write = 0;
    this.played = 0;
    this.dropped = 0; // queued agent audio a barge-in threw away
    this.quanta = 0;
    this.port.onmessage = (event) => {
      if (event.data === "clear") {
        this.dropped += this.write - this.read;
        this.read = this.write = 0;
        this.port.postMessage({ played: this.played, dropped: this.dropped });
        return;
      }
      const samples = new Int16Array(event.data);
      for (let i = 0; i < samples.length && this.write < this.queue.length; i++) {
        this.queue[this.write++] = samples[i] / 0x8000;
      }
    };
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    let n = 0;
    for (; n < out.length && this.read < this.write; n++) { out[n] = this.queue[this.read++]; }
    out.fill(0, n);
    this.played += n;
    if (this.read === this.write) { this.read = this.write = 0; }
    if (n > 0 && ++this.quanta % 8 === 0 || (n > 0 && this.read === 0)) {
      this.port.postMessage({ played: this.played, dropped: this.dropped });
    }
    return true;
  }
}

registerProcessor("capture", Capture);
registerProcessor("playback", Playback);
