// voxline browser client: microphone -> 16 kHz PCM16 over the WebSocket (docs/protocol.md), reply audio -> a
// playback worklet that a barge-in empties at once, a live transcript and each turn's latency timeline.
// Plain JavaScript, no build step. Test hooks live on window.voxline.

'use strict';

(() => {
  const INPUT_RATE = 16000;
  const DEFAULT_OUTPUT_RATE = 24000;
  const MAX_EVENTS = 5000; // window.voxline.events keeps the latest ones, so a long call does not grow forever
  const STAGES = [
    ['turn_decided', 'turn decided'],
    ['final_transcript', 'final transcript'],
    ['llm_first_token', 'LLM first token'],
    ['first_sentence', 'first sentence'],
    ['tts_first_audio', 'TTS first audio'],
    ['first_audio_sent', 'first audio sent'],
  ];

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), stack: $('stack'), sessionId: $('session-id'), transcript: $('transcript'),
    empty: $('empty'), composer: $('composer'), text: $('text'), start: $('start'), interrupt: $('interrupt'),
    meter: $('meter'), meterFill: $('meter-fill'), agentFill: $('agent-fill'), timelines: $('timelines'),
    legend: $('legend'), statSent: $('stat-sent'), statRecv: $('stat-recv'), statPlayed: $('stat-played'),
  };

  // Everything the test (and a curious developer in the console) may read.
  const hooks = {
    state: 'idle', // idle | connecting | live | closed | error
    mode: null, // 'voice' | 'text'
    sessionId: null,
    inputRate: INPUT_RATE,
    outputRate: null,
    contextRate: null,
    events: [], // every JSON event received, in order
    errors: [], // error events and client-side failures
    audioMessagesReceived: 0,
    audioBytesReceived: 0,
    framesSent: 0,
    audioBytesSent: 0,
    playedSamples: 0, // rendered by the playback worklet, at contextRate, whole session
    replyPlayedMs: 0, // of the current reply, as last reported to the server
    playbackReportsSent: 0,
    clears: 0,
    droppedOnClearSamples: 0,
    micLevelDb: -100,
    micPeakDb: -100, // loudest level seen, for the test
    timelines: [],
    costs: {}, // turn -> the server's `cost` event (money per turn and for the session so far)
  };
  window.voxline = hooks;

  let ws = null;
  let audio = null; // {ctx, player, capture, source, stream}
  let started = false; // session.started received
  let replyBoundary = true; // the next reply audio starts a new reply (played count restarts)
  let agentSpeaking = false; // reply audio received since the last agent_done/clear
  let userBubble = null;
  let agentBubble = null;
  let connecting = null;

  // ---- status and small UI helpers ------------------------------------------------------------------------------

  function setState(state, label) {
    hooks.state = state;
    ui.status.dataset.state = state;
    ui.status.querySelector('.label').textContent = label || state;
    const busy = state === 'connecting';
    const voiceLive = (state === 'live' || busy) && hooks.mode === 'voice';
    ui.start.classList.toggle('stop', voiceLive);
    ui.start.querySelector('.text').textContent = voiceLive ? 'Stop' : 'Start';
    ui.start.disabled = busy;
    ui.interrupt.disabled = !(state === 'live' && agentSpeaking);
  }

  function seconds(samples, rate) {
    return rate ? `${(samples / rate).toFixed(1)} s` : '0 s';
  }

  function refreshStats() {
    ui.statSent.textContent = seconds(hooks.audioBytesSent / 2, INPUT_RATE);
    ui.statRecv.textContent = seconds(hooks.audioBytesReceived / 2, hooks.outputRate);
    ui.statPlayed.textContent = seconds(hooks.playedSamples, hooks.contextRate);
  }

  function setAgentSpeaking(on) {
    agentSpeaking = on;
    document.body.classList.toggle('agent-speaking', on);
    ui.interrupt.disabled = !(hooks.state === 'live' && on);
  }

  function scrollTranscript() {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function bubble(role, cls = '') {
    if (ui.empty) {
      ui.empty.remove();
      ui.empty = null;
    }
    const row = document.createElement('div');
    row.className = `msg ${role} ${cls}`.trim();
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = role === 'user' ? 'you' : role === 'agent' ? 'agent' : '';
    const body = document.createElement('div');
    body.className = 'body';
    row.append(who, body);
    ui.transcript.append(row);
    scrollTranscript();
    return row;
  }

  function note(text, cls = '') {
    const row = bubble('note', cls);
    row.querySelector('.body').textContent = text;
    return row;
  }

  function showError(where, message) {
    hooks.errors.push({ where, message });
    note(`${where}: ${message}`, 'error');
  }

  // ---- audio graph ----------------------------------------------------------------------------------------------

  async function ensureAudio() {
    if (audio) return audio;
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    await ctx.audioWorklet.addModule('/static/worklet.js');
    const player = new AudioWorkletNode(ctx, 'voxline-playback', {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { capacitySeconds: 30 },
    });
    player.port.onmessage = (e) => onPlayer(e.data);
    player.connect(ctx.destination);
    if (ctx.state === 'suspended') await ctx.resume();
    hooks.contextRate = ctx.sampleRate;
    audio = { ctx, player, capture: null, source: null, stream: null };
    return audio;
  }

  async function startMic() {
    const stream = await navigator.mediaDevices.getUserMedia({
      // The browser's echo canceller keeps the agent's own voice, coming back through the mic, from
      // interrupting it; the server's echo check is the second line of defence.
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const { ctx } = audio;
    const source = ctx.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(ctx, 'voxline-capture', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { targetRate: INPUT_RATE, frameMs: 20 },
    });
    capture.port.onmessage = (e) => onCapture(e.data);
    source.connect(capture);
    capture.connect(ctx.destination); // outputs silence; connected so the graph keeps pulling it
    Object.assign(audio, { stream, source, capture });
  }

  function stopMic() {
    if (!audio || !audio.stream) return;
    audio.stream.getTracks().forEach((t) => t.stop());
    audio.source.disconnect();
    audio.capture.disconnect();
    audio.capture.port.onmessage = null;
    Object.assign(audio, { stream: null, source: null, capture: null });
    setLevel(-100);
  }

  async function closeAudio() {
    stopMic();
    if (!audio) return;
    const { ctx } = audio;
    audio = null;
    try { await ctx.close(); } catch (_) { /* already closed */ }
  }

  function onCapture(msg) {
    if (msg.type === 'frame') {
      if (ws && ws.readyState === WebSocket.OPEN && started) {
        ws.send(msg.pcm);
        hooks.framesSent += 1;
        hooks.audioBytesSent += msg.pcm.byteLength;
        if (hooks.framesSent % 25 === 0) refreshStats();
      }
    } else if (msg.type === 'level') {
      setLevel(20 * Math.log10(Math.max(msg.rms, 1e-5)));
    }
  }

  function setLevel(db) {
    hooks.micLevelDb = db;
    hooks.micPeakDb = Math.max(hooks.micPeakDb, db);
    const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
    ui.meterFill.style.width = `${pct}%`;
    ui.meter.setAttribute('aria-valuenow', String(Math.round(Math.max(-60, db))));
  }

  function onPlayer(msg) {
    if (msg.type === 'played') {
      hooks.playedSamples = msg.totalSamples;
      const ms = Math.round((msg.replySamples / hooks.contextRate) * 1000);
      hooks.replyPlayedMs = ms;
      if (ws && ws.readyState === WebSocket.OPEN && started) {
        ws.send(JSON.stringify({ type: 'playback', played_ms: ms }));
        hooks.playbackReportsSent += 1;
      }
      const db = 20 * Math.log10(Math.max(msg.rms, 1e-5));
      const pct = Math.max(4, Math.min(100, ((db + 60) / 60) * 100));
      ui.agentFill.style.width = msg.bufferedSamples > 0 ? `${pct}%` : '0%';
      refreshStats();
    } else if (msg.type === 'cleared') {
      hooks.playedSamples = msg.totalSamples;
      hooks.droppedOnClearSamples += msg.droppedSamples;
      ui.agentFill.style.width = '0%';
    }
  }

  // ---- connection ------------------------------------------------------------------------------------------------

  function wsUrl() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${scheme}://${location.host}/ws`;
  }

  // A server with API keys: open the page as /?key=KEY. Browsers cannot set headers on a WebSocket, so the key
  // travels as the socket's ?key= (the server keeps it out of its logs); wsUrl() stays key-free for messages.
  const apiKey = new URLSearchParams(location.search).get('key');
  const socketUrl = () => (apiKey ? `${wsUrl()}?key=${encodeURIComponent(apiKey)}` : wsUrl());

  /** Open the audio graph (and the mic in voice mode), the socket, and wait for session.started. */
  function connect(mode) {
    if (connecting) return connecting;
    connecting = (async () => {
      hooks.mode = mode;
      setState('connecting', mode === 'voice' ? 'starting microphone…' : 'connecting…');
      await ensureAudio();
      if (mode === 'voice') await startMic();
      await openSocket();
    })();
    connecting.finally(() => { connecting = null; }).catch(() => {});
    return connecting;
  }

  function openSocket() {
    return new Promise((resolve, reject) => {
      setState('connecting', 'connecting…');
      const rate = audio.ctx.sampleRate;
      // Ask for audio at the context rate when the protocol allows it (no resampling at all); else 24 kHz, which
      // the playback worklet resamples.
      const wanted = rate >= 8000 && rate <= 48000 ? Math.round(rate) : DEFAULT_OUTPUT_RATE;
      const sock = new WebSocket(socketUrl());
      sock.binaryType = 'arraybuffer';
      ws = sock;
      started = false;
      let settled = false;
      sock.onopen = () => {
        sock.send(JSON.stringify({ type: 'session.start', sample_rate: INPUT_RATE, output_sample_rate: wanted }));
      };
      sock.onmessage = (e) => {
        if (typeof e.data === 'string') {
          let event;
          try { event = JSON.parse(e.data); } catch (_) { return; }
          onEvent(event);
          if (event.type === 'session.started' && !settled) {
            settled = true;
            resolve();
          }
        } else {
          onAudio(e.data);
        }
      };
      // (an `error` event always comes with a `close` event, which has the code and reason)
      sock.onclose = (e) => {
        if (ws !== sock) return;
        ws = null;
        started = false;
        stopMic();
        setAgentSpeaking(false);
        const why = e.reason ? `: ${e.reason}` : '';
        if (!settled) { // never got session.started: the caller of connect() reports it
          settled = true;
          reject(new Error(`could not connect to ${wsUrl()} (code ${e.code})${why}`));
        } else if (e.code === 1000 || e.code === 1005) {
          setState('closed', 'disconnected');
        } else {
          setState('error', `closed (${e.code})`);
          const gone = e.code === 1001 || e.code === 1006 || e.code === 1012; // going away, dropped, restart
          showError('connection', gone ? `the server went away (code ${e.code})`
            : `the server closed the session (code ${e.code})${why}`);
        }
      };
    });
  }

  async function stop() {
    if (ws && ws.readyState === WebSocket.OPEN) {
      try { ws.send(JSON.stringify({ type: 'end' })); } catch (_) { /* closing anyway */ }
      const sock = ws;
      ws = null;
      sock.close(1000, 'bye');
    }
    started = false;
    await closeAudio();
    setAgentSpeaking(false);
    setState('closed', 'disconnected');
  }

  // ---- protocol --------------------------------------------------------------------------------------------------

  function onAudio(data) {
    hooks.audioMessagesReceived += 1;
    hooks.audioBytesReceived += data.byteLength;
    if (!audio) return;
    if (replyBoundary) {
      audio.player.port.postMessage({ type: 'newReply' });
      replyBoundary = false;
    }
    setAgentSpeaking(true);
    audio.player.port.postMessage({ type: 'audio', pcm: data }, [data]);
  }

  function onEvent(ev) {
    hooks.events.push(ev);
    if (hooks.events.length > MAX_EVENTS) hooks.events.splice(0, hooks.events.length - MAX_EVENTS);
    switch (ev.type) {
      case 'session.started':
        started = true;
        hooks.sessionId = ev.session_id;
        hooks.outputRate = ev.output_sample_rate;
        audio.player.port.postMessage({ type: 'config', inputRate: ev.output_sample_rate });
        ui.sessionId.textContent = `session ${ev.session_id}`;
        setState('live', hooks.mode === 'voice' ? 'live — listening' : 'live — text only');
        break;
      case 'speech_started':
        userTurn().classList.add('speaking');
        break;
      case 'turn_ended':
        if (userBubble) userBubble.classList.remove('speaking');
        // A turn that ends while no reply is playing: the next audio is a new reply. (During a reply the user may
        // only be backchanneling; a real interruption comes with `clear`.)
        if (!agentSpeaking) replyBoundary = true;
        break;
      case 'transcript':
        onTranscript(ev);
        break;
      case 'ignored':
        onIgnored(ev);
        break;
      case 'reply_started':
        // (newer servers say so explicitly; agent_done/clear/turn_ended above mark the same boundary otherwise)
        replyBoundary = true;
        break;
      case 'agent_text':
        agentTurn().append(sentence(ev.text));
        scrollTranscript();
        break;
      case 'clear':
        // Barge-in: drop every buffered sample now.
        if (audio) audio.player.port.postMessage({ type: 'clear' });
        hooks.clears += 1;
        replyBoundary = true;
        setAgentSpeaking(false);
        break;
      case 'interrupted':
        onInterrupted(ev);
        break;
      case 'agent_done':
        replyBoundary = true;
        setAgentSpeaking(false);
        if (agentBubble) agentBubble.classList.add('done');
        agentBubble = null;
        break;
      case 'timeline':
        hooks.timelines.push(ev);
        renderTimelines();
        break;
      case 'cost':
        hooks.costs[ev.turn] = ev;
        renderTimelines();
        break;
      case 'error':
        showError(ev.code || ev.source || 'error', ev.message || 'unknown error');
        break;
      default:
        break; // usage and future events: kept in hooks.events
    }
  }

  function userTurn() {
    if (!userBubble) {
      userBubble = bubble('user', 'interim');
      userBubble.querySelector('.body').textContent = '…';
    }
    return userBubble;
  }

  function onTranscript(ev) {
    const row = userTurn();
    const body = row.querySelector('.body');
    if (!ev.final) {
      body.textContent = ev.text || '…';
      return;
    }
    row.classList.remove('interim', 'speaking');
    body.textContent = ev.text || '(no words)';
    if (!ev.text) row.classList.add('ignored');
    userBubble = null; // (the agent bubble stays open: an interruption marks the reply it cut)
    scrollTranscript();
  }

  function onIgnored(ev) {
    // The final transcript came just before; mark the latest user bubble.
    const rows = ui.transcript.querySelectorAll('.msg.user');
    const row = rows[rows.length - 1];
    if (!row) return;
    row.classList.add('ignored');
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = `ignored: ${ev.reason}`;
    row.querySelector('.body').append(' ', tag);
  }

  function agentTurn() {
    if (!agentBubble) {
      agentBubble = bubble('agent');
    }
    return agentBubble.querySelector('.body');
  }

  function sentence(text) {
    const span = document.createElement('span');
    span.className = 'sentence';
    span.textContent = `${text} `;
    return span;
  }

  function onInterrupted(ev) {
    const body = agentTurn();
    const heard = (ev.heard || '').trim();
    const planned = (ev.planned || '').trim();
    const rest = planned.startsWith(heard) ? planned.slice(heard.length).trim() : planned;
    body.textContent = '';
    const h = document.createElement('span');
    h.className = 'heard';
    h.textContent = heard || '(nothing heard)';
    body.append(h);
    if (rest) {
      const cut = document.createElement('s');
      cut.className = 'unheard';
      cut.title = 'planned but not heard';
      cut.textContent = rest;
      body.append(' ', cut);
    }
    const tag = document.createElement('span');
    tag.className = 'tag interrupt';
    tag.textContent = 'interrupted';
    body.append(' ', tag);
    agentBubble.classList.add('interrupted');
    scrollTranscript();
  }

  // ---- latency timelines ----------------------------------------------------------------------------------------

  function renderLegend() {
    ui.legend.textContent = '';
    STAGES.forEach(([key, label], i) => {
      const item = document.createElement('span');
      item.className = 'legend-item';
      const sw = document.createElement('i');
      sw.className = `swatch s${i}`;
      item.append(sw, label);
      item.dataset.stage = key;
      ui.legend.append(item);
    });
  }

  /**
   * One card per turn, newest first: a Gantt row per stage (a bar from the previous stage to this one, so the
   * slow stage stands out), on one scale shared by all turns so turns compare at a glance.
   */
  function renderTimelines() {
    const turns = hooks.timelines;
    let scale = 1;
    for (const t of turns) {
      for (const [key] of STAGES) scale = Math.max(scale, t.stages_ms[key] || 0);
    }
    ui.timelines.textContent = '';
    for (const t of [...turns].reverse()) {
      const card = document.createElement('div');
      card.className = 'tl-turn';
      card.dataset.turn = String(t.turn);
      const head = document.createElement('div');
      head.className = 'tl-head';
      const title = document.createElement('span');
      title.className = 'tl-title';
      title.textContent = `Turn ${t.turn}`;
      const v2v = document.createElement('span');
      v2v.className = 'tl-v2v';
      if (t.voice_to_voice_ms != null) {
        v2v.textContent = `${Math.round(t.voice_to_voice_ms)} ms voice-to-voice`;
      } else {
        v2v.textContent = 'typed turn';
        v2v.classList.add('muted');
      }
      head.append(title, v2v);
      const cost = hooks.costs[t.turn];
      if (cost) {
        const money = document.createElement('span');
        money.className = 'tl-cost muted';
        money.title = 'this turn / the whole session so far (price table: voxline cost)';
        money.textContent = `$${cost.turn_cost.toFixed(5)} · session $${cost.session_cost.toFixed(5)}`;
        head.append(money);
      }
      card.append(head);
      let prev = 0;
      STAGES.forEach(([key, label], i) => {
        const ms = t.stages_ms[key];
        const row = document.createElement('div');
        row.className = 'tl-row';
        row.dataset.stage = key;
        const name = document.createElement('span');
        name.className = 'tl-label';
        name.textContent = label;
        const track = document.createElement('div');
        track.className = 'tl-track';
        const val = document.createElement('span');
        val.className = 'tl-ms';
        if (ms == null) {
          val.textContent = '—';
        } else {
          const start = Math.max(0, Math.min(prev, ms));
          const bar = document.createElement('div');
          bar.className = `tl-bar s${i}`;
          bar.style.left = `${(start / scale) * 100}%`;
          bar.style.width = `max(2px, ${((ms - start) / scale) * 100}%)`;
          bar.title = `${label}: ${Math.round(ms)} ms (+${Math.round(ms - start)} ms)`;
          track.append(bar);
          val.textContent = `${Math.round(ms)}`;
          prev = Math.max(prev, ms);
        }
        row.append(name, track, val);
        card.append(row);
      });
      const end = t.stages_ms.interrupted != null ? ['interrupted', t.stages_ms.interrupted]
        : t.stages_ms.playback_finished != null ? ['reply finished', t.stages_ms.playback_finished] : null;
      if (end) {
        const foot = document.createElement('div');
        foot.className = `tl-foot ${end[0] === 'interrupted' ? 'interrupt' : ''}`;
        foot.textContent = `${end[0]} at ${Math.round(end[1])} ms`;
        card.append(foot);
      }
      ui.timelines.append(card);
    }
  }

  // ---- controls --------------------------------------------------------------------------------------------------

  ui.start.addEventListener('click', async () => {
    if (hooks.state === 'live' && hooks.mode === 'voice') {
      await stop();
      return;
    }
    try {
      if (hooks.state === 'live') await stop(); // a text-only session becomes a voice session
      await connect('voice');
    } catch (err) {
      const micFailed = err && (err.name === 'NotAllowedError' || err.name === 'NotFoundError'
        || err.name === 'NotReadableError' || err.name === 'OverconstrainedError');
      showError(micFailed ? 'microphone' : 'start', micFailed
        ? `${err.message || err.name}. You can still type a message.` : String(err.message || err));
      await stop();
      setState('error', micFailed ? 'no microphone' : 'not connected');
    }
  });

  ui.interrupt.addEventListener('click', () => {
    if (ws && ws.readyState === WebSocket.OPEN && started) ws.send(JSON.stringify({ type: 'interrupt' }));
  });

  ui.composer.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = ui.text.value.trim();
    if (!text) return;
    ui.text.value = '';
    try {
      if (!(ws && ws.readyState === WebSocket.OPEN && started)) await connect('text');
    } catch (err) {
      showError('connection', String(err.message || err));
      setState('error', 'not connected');
      if (!ui.text.value) ui.text.value = text; // keep the message for a retry
      return;
    }
    const row = bubble('user', 'typed');
    row.querySelector('.body').textContent = text;
    userBubble = null;
    ws.send(JSON.stringify({ type: 'text', text }));
  });

  async function showStack() {
    try {
      const res = await fetch('/healthz');
      if (!res.ok) return;
      const info = await res.json();
      const p = info.providers || {};
      ui.stack.textContent = '';
      for (const [kind, name] of [['STT', p.stt], ['LLM', p.llm], ['TTS', p.tts]]) {
        if (!name) continue;
        const chip = document.createElement('span');
        chip.className = 'chip';
        chip.innerHTML = '<b></b> ';
        chip.querySelector('b').textContent = kind;
        chip.append(name);
        ui.stack.append(chip);
      }
      if (info.version) ui.stack.title = `voxline ${info.version}`;
    } catch (_) {
      /* the page still works without it */
    }
  }

  renderLegend();
  setState('idle', 'not connected');
  showStack();
})();
