// voxline AudioWorklet processors: microphone capture (context rate -> 16 kHz PCM16 frames) and reply playback
// (PCM16 at the server's rate -> a ring buffer at the context rate that a barge-in empties at once).
//
// The file also loads as a plain page script (no registerProcessor there): it then only defines
// globalThis.VoxlineResampler, so the test can check the resampler's accuracy in the browser itself.

'use strict';

/**
 * Streaming windowed-sinc resampler for any rate ratio. Output sample n sits exactly at input time n * in/out
 * (the kernel is symmetric, so there is no phase shift; the price is `half` input samples of look-ahead).
 * When downsampling, the cutoff drops below the output Nyquist, so the 44.1/48 kHz mic does not alias into 16 kHz.
 */
class VoxlineResampler {
  constructor(inRate, outRate, zeroCrossings = 16, phases = 256) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    this.identity = inRate === outRate;
    const cutoff = Math.min(1, outRate / inRate) * 0.94; // as a fraction of the input Nyquist
    this.half = Math.ceil(zeroCrossings / cutoff); // kernel half-width, in input samples
    this.phases = phases;
    const n = 2 * this.half * phases + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const d = i / phases - this.half; // distance from the output instant, in input samples
      const x = d / this.half;
      if (Math.abs(x) >= 1) continue;
      const arg = Math.PI * cutoff * d;
      const sinc = arg === 0 ? 1 : Math.sin(arg) / arg;
      const blackman = 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
      this.table[i] = cutoff * sinc * blackman;
    }
    this.reset();
  }

  reset() {
    this.hist = new Float32Array(4096 + 2 * this.half);
    this.len = this.half; // `half` zeros of left context so the first output sits at input time 0
    this.t = this.half; // position of the next output sample, in input samples from hist[0]
  }

  /** Resample a block of float samples; returns the output samples that are complete so far. */
  process(input) {
    if (this.identity) return Float32Array.from(input);
    if (this.len + input.length > this.hist.length) {
      const grown = new Float32Array(2 * (this.len + input.length));
      grown.set(this.hist.subarray(0, this.len));
      this.hist = grown;
    }
    this.hist.set(input, this.len);
    this.len += input.length;
    const half = this.half;
    const out = new Float32Array(Math.max(0, Math.ceil((this.len - half - this.t) / this.step) + 1));
    const { hist, table, phases } = this;
    let t = this.t;
    let o = 0;
    // an output needs input up to floor(t) + half; stop at the first one that is not complete yet
    for (; o < out.length && Math.floor(t) + half < this.len; o++) {
      const i0 = Math.floor(t);
      const frac = t - i0;
      let acc = 0;
      // taps k = i0-half+1 .. i0+half; kernel argument d = t - k, table index (d + half) * phases
      let pos = (frac + 2 * half - 1) * phases;
      for (let k = i0 - half + 1; k <= i0 + half; k++, pos -= phases) {
        const j = pos | 0;
        const w = pos - j;
        acc += hist[k] * (table[j] + w * (table[j + 1] - table[j]));
      }
      out[o] = acc;
      t += this.step;
    }
    // keep only what the next outputs still need
    const drop = Math.max(0, Math.floor(t) - half + 1);
    if (drop > 0) {
      hist.copyWithin(0, drop, this.len);
      this.len -= drop;
      t -= drop;
    }
    this.t = t;
    return o === out.length ? out : out.subarray(0, o);
  }
}

globalThis.VoxlineResampler = VoxlineResampler;

if (typeof registerProcessor === 'function') {
  /**
   * Microphone -> mono -> 16 kHz -> PCM16 frames of `frameMs`, posted (transferred) to the page, plus the input
   * level every ~50 ms for the meter. Outputs silence (it is connected only so the graph pulls it).
   */
  class CaptureProcessor extends AudioWorkletProcessor {
    constructor(options) {
      super();
      const opts = (options && options.processorOptions) || {};
      this.targetRate = opts.targetRate || 16000;
      this.frameSamples = Math.round((this.targetRate * (opts.frameMs || 20)) / 1000);
      this.resampler = new VoxlineResampler(sampleRate, this.targetRate);
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
      this.levelEvery = Math.round(sampleRate * 0.05);
      this.levelCount = 0;
      this.levelSum = 0;
      this.levelPeak = 0;
      this.port.onmessage = (e) => {
        if (e.data && e.data.type === 'reset') {
          this.resampler.reset();
          this.filled = 0;
        }
      };
    }

    process(inputs) {
      const input = inputs[0];
      if (!input || input.length === 0 || input[0].length === 0) return true;
      const n = input[0].length;
      const mono = new Float32Array(n);
      for (let c = 0; c < input.length; c++) {
        const ch = input[c];
        for (let i = 0; i < n; i++) mono[i] += ch[i];
      }
      if (input.length > 1) for (let i = 0; i < n; i++) mono[i] /= input.length;
      for (let i = 0; i < n; i++) {
        const v = mono[i];
        this.levelSum += v * v;
        const a = Math.abs(v);
        if (a > this.levelPeak) this.levelPeak = a;
      }
      this.levelCount += n;
      if (this.levelCount >= this.levelEvery) {
        this.port.postMessage({ type: 'level', rms: Math.sqrt(this.levelSum / this.levelCount), peak: this.levelPeak });
        this.levelCount = 0;
        this.levelSum = 0;
        this.levelPeak = 0;
      }
      const out = this.resampler.process(mono);
      for (let i = 0; i < out.length; i++) {
        const s = Math.max(-1, Math.min(1, out[i]));
        this.frame[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
        if (this.filled === this.frameSamples) {
          const pcm = this.frame.buffer;
          this.port.postMessage({ type: 'frame', pcm }, [pcm]);
          this.frame = new Int16Array(this.frameSamples);
          this.filled = 0;
        }
      }
      return true;
    }
  }

  /**
   * Reply audio: PCM16 chunks from the server, resampled to the context rate into a ring buffer, rendered as they
   * come. `clear` empties the buffer at once (barge-in). While a reply plays it reports, every ~100 ms, how many
   * samples it has actually rendered since the reply started, so the server knows what the caller heard.
   */
  class PlaybackProcessor extends AudioWorkletProcessor {
    constructor(options) {
      const opts = (options && options.processorOptions) || {};
      super();
      this.ring = new Float32Array(Math.round(sampleRate * (opts.capacitySeconds || 30)));
      this.read = 0;
      this.count = 0;
      this.resampler = null;
      this.replySamples = 0; // rendered since the current reply started
      this.totalSamples = 0; // rendered since this node was created
      this.dropped = 0; // overflow (should stay 0: the server paces its audio)
      this.reportEvery = Math.round(sampleRate * 0.1);
      this.sinceReport = 0;
      this.active = false; // rendered something since the last report
      this.sumSquares = 0; // of what was rendered since the last report, for the page's level meter
      this.rendered = 0;
      this.port.onmessage = (e) => this.onMessage(e.data);
    }

    onMessage(msg) {
      switch (msg.type) {
        case 'config':
          this.resampler = new VoxlineResampler(msg.inputRate, sampleRate);
          break;
        case 'audio':
          this.push(new Int16Array(msg.pcm));
          break;
        case 'newReply':
          this.replySamples = 0;
          this.sinceReport = 0;
          break;
        case 'clear': {
          const dropped = this.count;
          this.read = 0;
          this.count = 0;
          this.replySamples = 0;
          this.sinceReport = 0;
          this.active = false;
          if (this.resampler) this.resampler.reset();
          this.port.postMessage({ type: 'cleared', droppedSamples: dropped, totalSamples: this.totalSamples });
          break;
        }
        default:
          break;
      }
    }

    push(pcm) {
      if (!this.resampler) this.resampler = new VoxlineResampler(sampleRate, sampleRate);
      const f = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
      const out = this.resampler.process(f);
      const cap = this.ring.length;
      for (let i = 0; i < out.length; i++) {
        if (this.count === cap) { // full: drop the oldest sample
          this.read = (this.read + 1) % cap;
          this.count--;
          this.dropped++;
        }
        this.ring[(this.read + this.count) % cap] = out[i];
        this.count++;
      }
    }

    process(_inputs, outputs) {
      const out = outputs[0][0];
      const n = Math.min(out.length, this.count);
      const cap = this.ring.length;
      for (let i = 0; i < n; i++) {
        const v = this.ring[(this.read + i) % cap];
        out[i] = v;
        this.sumSquares += v * v;
      }
      this.rendered += n;
      for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
      this.read = (this.read + n) % cap;
      this.count -= n;
      if (n > 0) {
        this.replySamples += n;
        this.totalSamples += n;
        this.active = true;
      }
      this.sinceReport += out.length;
      if (this.sinceReport >= this.reportEvery || (this.active && this.count === 0)) {
        if (this.active) {
          this.port.postMessage({
            type: 'played', replySamples: this.replySamples, totalSamples: this.totalSamples,
            bufferedSamples: this.count, droppedSamples: this.dropped,
            rms: this.rendered ? Math.sqrt(this.sumSquares / this.rendered) : 0,
          });
        }
        this.active = false;
        this.sinceReport = 0;
        this.sumSquares = 0;
        this.rendered = 0;
      }
      return true;
    }
  }

  registerProcessor('voxline-capture', CaptureProcessor);
  registerProcessor('voxline-playback', PlaybackProcessor);
}
