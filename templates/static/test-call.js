// The agent page's test call: talk to the agent from this browser. A single-use token comes
// from the page (session + CSRF), the call worker's stream carries PCM16 at 24 kHz both ways,
// and the page shows both sides' words, the time to first audio and how the call ended.
(function () {
  "use strict";

  function setup(panel) {
    var startButton = panel.querySelector("#test-call-start");
    var stopButton = panel.querySelector("#test-call-stop");
    var status = panel.querySelector("#test-call-status");
    var error = panel.querySelector("#test-call-error");
    var transcript = panel.querySelector("#test-call-transcript");
    var firstAudio = panel.querySelector("#test-call-first-audio");
    var endReason = panel.querySelector("#test-call-end-reason");
    var played = panel.querySelector("#test-call-played");
    var rating = panel.querySelector("#test-call-rating");
    var rated = panel.querySelector("#test-call-rated");
    var call = null;
    var lastCallId = null;

    rating.addEventListener("submit", async function (event) {
      event.preventDefault();
      var form = new URLSearchParams(new FormData(rating));
      form.set("csrf", panel.dataset.csrf);
      var answer = await fetch("/calls/" + encodeURIComponent(lastCallId) + "/feedback", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
        body: form,
      });
      var body = await answer.json();
      rated.textContent = answer.ok ? "Thanks: rated " + body.score + "." : (body.detail || "Not saved.");
      if (answer.ok) { rating.querySelector("button").disabled = true; }
    });

    function say(text) { status.textContent = text; }
    function fail(text) { error.textContent = text; error.hidden = false; }

    function line(role, text) {
      var item = document.createElement("li");
      item.className = "said " + role;
      item.dataset.role = role;
      var who = document.createElement("strong");
      who.textContent = role === "agent" ? "Agent: " : "You: ";
      item.appendChild(who);
      item.appendChild(document.createTextNode(text));
      transcript.appendChild(item);
    }

    function finish(reason) {
      if (!call) { return; }
      var ending = call;
      call = null;
      if (ending.stream) { ending.stream.getTracks().forEach(function (t) { t.stop(); }); }
      if (ending.context) { ending.context.close(); }
      if (reason && endReason.textContent === "—") { endReason.textContent = reason; }
      panel.dataset.state = "ended";
      say("Call ended.");
      if (lastCallId) { rating.hidden = false; rating.querySelector("button").disabled = false; rated.textContent = ""; }
      startButton.disabled = false;
      stopButton.disabled = true;
    }

    async function start() {
      error.hidden = true;
      transcript.innerHTML = "";
      firstAudio.textContent = endReason.textContent = "—";
      played.dataset.samples = "0";
      played.textContent = "0 samples";
      startButton.disabled = true;
      say("Starting…");
      var answer, body;
      try {
        answer = await fetch(panel.dataset.startUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
          body: new URLSearchParams({ csrf: panel.dataset.csrf }),
        });
        body = await answer.json();
      } catch (e) {
        fail("Switchboard could not be reached; try again.");
        startButton.disabled = false;
        say("Not connected.");
        return;
      }
      if (!answer.ok) {
        fail(body.detail || "The test call could not start.");
        startButton.disabled = false;
        say("Not connected.");
        return;
      }
      lastCallId = body.call_id;
      rating.hidden = true;
      var pressed = performance.now();
      var context = new AudioContext({ sampleRate: 24000 });
      call = { context: context, stream: null, socket: null, ready: false, heard: false };
      try {
        await context.audioWorklet.addModule("/static/test-call-worklet.js");
        call.stream = await navigator.mediaDevices.getUserMedia({
          audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
        });
      } catch (e) {
        fail("The microphone is not available: " + (e.message || e.name));
        finish("no microphone");
        return;
      }
      var capture = new AudioWorkletNode(context, "capture", { numberOfOutputs: 1 });
      var mute = context.createGain();
      mute.gain.value = 0;
      context.createMediaStreamSource(call.stream).connect(capture);
      capture.connect(mute).connect(context.destination); // keeps the capture node pulled
      var player = new AudioWorkletNode(context, "playback", { numberOfInputs: 0, outputChannelCount: [1] });
      player.connect(context.destination);
      player.port.onmessage = function (event) {
        var dropped = event.data.dropped;
        played.dataset.samples = String(event.data.played);
        played.dataset.dropped = String(dropped);
        played.textContent = event.data.played + " samples" +
          (dropped ? " (" + dropped + " not played: you talked over the agent)" : "");
      };

      var socket = new WebSocket(body.url);
      socket.binaryType = "arraybuffer";
      call.socket = socket;
      var current = call;
      socket.onopen = function () { socket.send(JSON.stringify({ type: "start", token: body.token })); };
      capture.port.onmessage = function (event) {
        if (current.ready && socket.readyState === WebSocket.OPEN) { socket.send(event.data); }
      };
      socket.onmessage = function (event) {
        if (typeof event.data !== "string") {
          player.port.postMessage(event.data, [event.data]);
          if (!current.heard) {
            current.heard = true;
            panel.dataset.pageFirstAudioMs = String(Math.round(performance.now() - pressed));
          }
          return;
        }
        var message = JSON.parse(event.data);
        if (message.type === "ready") {
          current.ready = true;
          panel.dataset.state = "connected";
          say("Connected: speak now.");
          stopButton.disabled = false;
        } else if (message.type === "transcript") {
          line(message.role, message.text);
        } else if (message.type === "clear") {
          player.port.postMessage("clear"); // the caller talks over the agent
        } else if (message.type === "first_audio") {
          firstAudio.textContent = message.ms === null ? "—" : Math.round(message.ms) + " ms";
        } else if (message.type === "ended") {
          endReason.textContent = message.reason + (message.detail ? " (" + message.detail + ")" : "");
        } else if (message.type === "error") {
          fail(message.message);
        }
      };
      socket.onclose = function (event) { if (current === call) { finish(event.reason || "closed"); } };
      socket.onerror = function () { if (current === call && !current.ready) { fail("The call worker could not be reached."); } };
    }

    startButton.addEventListener("click", start);
    stopButton.addEventListener("click", function () {
      if (call && call.socket && call.socket.readyState === WebSocket.OPEN) {
        call.socket.send(JSON.stringify({ type: "stop" }));
        say("Ending…");
      } else {
        finish("stopped");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("test-call");
    if (panel) { setup(panel); }
  });
})();
