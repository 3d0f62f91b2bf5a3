// Switchyard console: live status refresh and confirmations. No framework, no build step.
// A region marked data-live-url is fetched again every few seconds while the tab is visible
// and nobody is typing in it; the server marks it finished (data-live="off") once nothing in
// it can change, and polling stops. A signed-out session reloads into the sign-in page.
(function () {
  "use strict";
  var PERIOD_MS = 3000;

  function refresh(region) {
    if (document.visibilityState !== "visible" || region.contains(document.activeElement) &&
        document.activeElement !== document.body && document.activeElement.tagName !== "A") {
      return schedule(region);
    }
    fetch(region.getAttribute("data-live-url"), {credentials: "same-origin", headers: {"X-Console-Live": "1"}})
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/console/login") !== -1) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) { return schedule(region); }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
        if (!fresh) { return schedule(region); }
        region.innerHTML = fresh.innerHTML;
        region.setAttribute("data-live", fresh.getAttribute("data-live") || "off");
        document.dispatchEvent(new CustomEvent("console:refreshed", {detail: region.id}));
        schedule(region);
      })
      .catch(function () { schedule(region); });
  }

  function schedule(region) {
    if (region.getAttribute("data-live") === "on") {
      window.setTimeout(function () { refresh(region); }, PERIOD_MS);
    }
  }

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  document.querySelectorAll("[data-live-url]").forEach(schedule);
})();
