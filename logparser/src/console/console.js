// shoplog console: live refresh of the overview and the action buttons. Hand-written, no
// library, same origin only (the page's Content-Security-Policy allows nothing else).
(function () {
  'use strict';

  function at(obj, pointer) {
    return pointer.split('/').slice(1).reduce(function (o, k) {
      return o === null || o === undefined ? undefined : o[k];
    }, obj);
  }

  function show(v) {
    if (v === null || v === undefined) return '\u2013';
    if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(2);
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    return String(v);
  }

  function cell(row, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function refresh() {
    fetch('/console/api/overview', { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (!d) return;
        document.querySelectorAll('[data-k]').forEach(function (el) {
          el.textContent = show(at(d, el.getAttribute('data-k')));
        });
        var services = document.getElementById('services');
        if (services && d.now && Array.isArray(d.now.services)) {
          services.textContent = '';
          d.now.services.forEach(function (svc) {
            var tr = document.createElement('tr');
            cell(tr, svc.service);
            cell(tr, show(svc.requests_per_s), 'num');
            cell(tr, show(svc.error_rate), 'num');
            services.appendChild(tr);
          });
        }
        var sums = document.getElementById('group-sums');
        if (sums && Array.isArray(d.groups)) {
          var rows = {};
          var order = [];
          d.groups.forEach(function (g) {
            var k = g.log + '\u0000' + g.group;
            if (!rows[k]) { rows[k] = { log: g.log, group: g.group, lag: 0, pending: 0, dead: 0 }; order.push(k); }
            rows[k].lag += g.lag; rows[k].pending += g.pending; rows[k].dead += g.dead_letters;
          });
          sums.textContent = '';
          order.forEach(function (k) {
            var r = rows[k];
            var tr = document.createElement('tr');
            cell(tr, r.log); cell(tr, r.group);
            cell(tr, show(r.lag), 'num'); cell(tr, show(r.pending), 'num'); cell(tr, show(r.dead), 'num');
            sums.appendChild(tr);
          });
        }
        var body = document.getElementById('groups');
        if (body && Array.isArray(d.groups)) {
          body.textContent = '';
          d.groups.forEach(function (g) {
            var tr = document.createElement('tr');
            cell(tr, g.stream); cell(tr, g.group);
            cell(tr, show(g.lag), 'num'); cell(tr, show(g.pending), 'num');
            cell(tr, show(g.dead_letters), 'num');
            cell(tr, (g.stuck || []).length + ' consumer(s)');
            body.appendChild(tr);
          });
        }
        document.querySelectorAll('img.live-chart').forEach(function (img) {
          img.src = img.getAttribute('data-src') + '?t=' + Date.now();
        });
        var u = document.getElementById('updated');
        if (u) u.textContent = new Date().toISOString().substr(11, 8) + ' UTC';
      })
      .catch(function () { /* the next tick tries again */ });
  }

  function act(button) {
    var out = document.getElementById('action-result');
    button.disabled = true;
    out.textContent = 'running\u2026';
    fetch(button.getAttribute('data-post'), {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Accept': 'application/json' }
    }).then(function (r) {
      return r.text().then(function (text) {
        var pretty = text;
        try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
        out.setAttribute('data-status', String(r.status));
        out.textContent = r.status + ' ' + r.statusText + '\n' + pretty;
      });
    }).catch(function (e) {
      out.textContent = 'failed: ' + e;
    }).then(function () { button.disabled = false; });
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('button[data-post]').forEach(function (b) {
      b.addEventListener('click', function () { act(b); });
    });
    if (document.body.getAttribute('data-live') === '1') {
      setInterval(refresh, 2000);
    }
  });
})();
