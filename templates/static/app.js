// Progressive enhancement for the agent form and the kill switch. Pages work without it.
(function () {
  "use strict";

  function setupAgentForm(form) {
    var voices = JSON.parse(form.dataset.voices);
    var voiceMap = JSON.parse(form.dataset.voiceMap);
    var hasXaiKey = form.dataset.hasXaiKey === "true";
    var tier = form.querySelector("#pricing_tier");
    var voice = form.querySelector("#voice");
    var warning = form.querySelector("#xai-key-warning");
    var lastOpenAIVoice = voice.dataset.current;

    function providerOf(option) { return option.dataset.voiceProvider || "openai"; }

    // The Grok voice an OpenAI voice maps to (case-insensitive), Ara when unmapped.
    function grokVoiceFor(name) {
      var lower = (name || "").toLowerCase();
      var grok = voices.grok.filter(function (v) { return v.toLowerCase() === lower; });
      if (grok.length) { return grok[0]; }
      return voiceMap.entries[lower] || voiceMap["default"];
    }

    function fill(provider, selected) {
      voice.innerHTML = "";
      voices[provider].forEach(function (name) {
        var option = document.createElement("option");
        option.value = name;
        option.textContent = name;
        if (name.toLowerCase() === (selected || "").toLowerCase()) { option.selected = true; }
        voice.appendChild(option);
      });
    }

    var currentProvider = providerOf(tier.options[tier.selectedIndex]);
    tier.addEventListener("change", function () {
      var provider = providerOf(tier.options[tier.selectedIndex]);
      if (provider !== currentProvider) {
        if (provider === "grok") {
          lastOpenAIVoice = voice.value;
          fill("grok", grokVoiceFor(lastOpenAIVoice));
        } else {
          fill(provider, lastOpenAIVoice);
        }
        currentProvider = provider;
      }
      warning.hidden = !(tier.value === "grok-realtime" && !hasXaiKey);
    });
  }

  function setupKillSwitch(form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var agentForm = document.getElementById("agent-form");
    if (agentForm) { setupAgentForm(agentForm); }
    Array.prototype.forEach.call(document.querySelectorAll("form.kill"), setupKillSwitch);
  });
})();
