// metamcp admin UI: the pages' only script, served from the binary
// (the Content-Security-Policy allows no other, and no inline script).
// Everything works without it; it only keeps the servers' status live.
'use strict';

(function () {
  var REFRESH_MS = 3000;

  function latency(ms) {
    return typeof ms === 'number' ? ms.toFixed(1) + ' ms' : '';
  }

  function text(value) {
    if (value === null || value === undefined) return '';
    return typeof value === 'string' ? value : JSON.stringify(value);
  }

  function setField(row, field, value) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    // textContent, never markup: names and errors come from upstreams.
    if (cell && cell.textContent !== value) cell.textContent = value;
  }

  function refreshServers(table) {
    if (timer === null) return;
    fetch(table.getAttribute('data-live'), {
      credentials: 'same-origin',
      headers: { accept: 'application/json' },
    })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          // The session ended (or lost the right): stop asking, say so.
          stop();
          var caption = table.querySelector('caption');
          if (caption) caption.textContent = 'Status not refreshed: reload the page to continue.';
          return null;
        }
        return r.ok ? r.json() : null;
      })
      .then(function (body) {
        if (!body || !Array.isArray(body.servers)) return;
        var rows = table.tBodies[0] ? table.tBodies[0].rows : [];
        body.servers.forEach(function (server) {
          for (var i = 0; i < rows.length; i++) {
            var row = rows[i];
            if (row.getAttribute('data-server') !== server.name) continue;
            var status = server.status || {};
            setField(row, 'status', text(status.status));
            setField(row, 'latency', latency(status.latency_ms));
            setField(row, 'breaker', text(server.breaker));
            setField(row, 'tools', text(server.tools));
            setField(row, 'last_error', text(status.last_error));
          }
        });
      })
      .catch(function () { /* offline for a moment: the next round retries */ });
  }

  var table = document.getElementById('servers');
  var timer = null;
  function stop() {
    if (timer !== null) window.clearInterval(timer);
    timer = null;
  }
  if (table && table.getAttribute('data-live')) {
    timer = window.setInterval(function () {
      if (!document.hidden) refreshServers(table);
    }, REFRESH_MS);
  }
})();
