(function () {
  "use strict";
  // Filters by host and by victim name. Reads text only (value, dataset); never writes markup.
  var host = document.getElementById("host-filter");
  var victim = document.getElementById("victim-filter");
  var shown = document.getElementById("kills-shown");
  function apply() {
    var wantHost = host.value;
    var wantVictim = victim.value.toLowerCase();
    var kills = 0;
    document.querySelectorAll("[data-host]").forEach(function (element) {
      var show = !wantHost || element.dataset.host === wantHost;
      if (show && wantVictim && element.hasAttribute("data-victim")) {
        show = element.dataset.victim.toLowerCase().indexOf(wantVictim) !== -1;
      }
      element.hidden = !show;
      if (show && element.classList.contains("kill")) {
        kills += 1;
      }
    });
    shown.textContent = String(kills);
  }
  host.addEventListener("change", apply);
  victim.addEventListener("input", apply);
  apply();
}());
