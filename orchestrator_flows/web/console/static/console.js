// The console's live parts: the operations page follows its feed of snapshots (Server-Sent
// Events) and redraws its figures and charts from each. The page's first figures come from
// the server; this only replaces them. No library: charts are inline SVG, built with
// createElementNS, their geometry in attributes and their colours in CSS classes (the
// Content-Security-Policy refuses inline style).
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var NONE = "\u2014";
  var HISTORY = 90; // points on the turns chart: 3 minutes at the default refresh of 2 s
  var WIDTH = 720, HEIGHT = 220, LEFT = 48, RIGHT = 12, TOP = 12, BOTTOM = 28;

  function perSec(value) { return value.toFixed(2); }
  function share(value) { return value === null ? NONE : (value * 100).toFixed(1) + " %"; }
  function latency(ms, calls, ceiling) {
    if (!calls) return NONE;
    return ms === null ? "over " + ceiling + " ms" : ms + " ms";
  }
  function redisText(redis) {
    return redis.unavailable !== null
      ? "unavailable (" + redis.unavailable + ")"
      : "ok, " + redis.round_trip_ms.toFixed(2) + " ms";
  }

  function setText(id, text) {
    var node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  function element(name, attributes, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cell(tag, text, className) {
    var node = document.createElement(tag);
    node.textContent = text;
    if (tag === "th") node.setAttribute("scope", "row");
    if (className) node.className = className;
    return node;
  }

  function fillRows(tbody, key, entries) {
    // entries: [[name, [[text, className], ...]], ...]; rows rebuilt in their given order.
    tbody.replaceChildren.apply(tbody, entries.map(function (entry) {
      var row = document.createElement("tr");
      row.setAttribute(key, entry[0]);
      row.appendChild(cell("th", entry[0]));
      entry[1].forEach(function (c) { row.appendChild(cell("td", c[0], c[1])); });
      return row;
    }));
  }

  function sum(values) { return values.reduce(function (a, b) { return a + b; }, 0); }

  function applyCounts(snapshot, rates) {
    var stages = Object.keys(snapshot.turns);
    fillRows(document.querySelector("#turns-by-stage tbody"), "data-stage", stages.map(function (s) {
      var count = sum(Object.values(snapshot.turns[s]));
      return [s, [[rates ? perSec(rates.by_stage[s] || 0) : NONE, "rate"], [String(count), "count"]]];
    }));
    var outcomes = {};
    stages.forEach(function (s) {
      Object.keys(snapshot.turns[s]).forEach(function (o) {
        outcomes[o] = (outcomes[o] || 0) + snapshot.turns[s][o];
      });
    });
    var outcomeBody = document.querySelector("#turns-by-outcome tbody");
    fillRows(outcomeBody, "data-outcome", Object.keys(outcomes).map(function (o) {
      return [o, [[rates ? perSec(rates.by_outcome[o] || 0) : NONE, "rate"], [String(outcomes[o]), "count"]]];
    }));
    // The outcome's label reads with spaces; its data-outcome keeps the name.
    outcomeBody.querySelectorAll("th").forEach(function (th) {
      th.textContent = th.textContent.replace(/_/g, " ");
    });
  }

  function applyAgents(snapshot, ceiling) {
    var roles = Object.keys(Object.assign({}, snapshot.agents, snapshot.circuits)).sort();
    var none = { calls: 0, faults: 0, p50_ms: null, p95_ms: null };
    fillRows(document.querySelector("#agent-latency tbody"), "data-agent", roles.map(function (role) {
      var a = snapshot.agents[role] || none;
      return [role, [[String(a.calls)], [String(a.faults)],
        [latency(a.p50_ms, a.calls, ceiling)], [latency(a.p95_ms, a.calls, ceiling)]]];
    }));
    fillRows(document.querySelector("#circuits tbody"), "data-agent", roles.map(function (role) {
      var state = snapshot.circuits[role] || "closed";
      return [role, [[state.replace("_", "-"), "circuit-" + state]]];
    }));
    drawLatency(roles.filter(function (r) { return snapshot.agents[r] && snapshot.agents[r].calls; })
      .map(function (r) { return [r, snapshot.agents[r]]; }), ceiling);
  }

  function axis(svg, top) {
    svg.appendChild(element("line", { x1: LEFT, y1: TOP, x2: LEFT, y2: HEIGHT - BOTTOM, "class": "axis" }));
    svg.appendChild(element("line", { x1: LEFT, y1: HEIGHT - BOTTOM, x2: WIDTH - RIGHT, y2: HEIGHT - BOTTOM, "class": "axis" }));
    svg.appendChild(element("text", { x: LEFT + 6, y: TOP + 4, "class": "tick", "text-anchor": "start" }, top));
    svg.appendChild(element("text", { x: LEFT - 6, y: HEIGHT - BOTTOM, "class": "tick", "text-anchor": "end" }, "0"));
  }

  function niceTop(value) {
    // The smallest 1, 2 or 5 times a power of ten at or above `value`.
    if (value <= 0) return 1;
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= value) return steps[i] * power;
    return 10 * power;
  }

  function drawTurns(history, stages) {
    var svg = document.getElementById("turns-chart");
    if (!svg) return;
    var top = niceTop(Math.max.apply(null, [0].concat(history.map(function (point) {
      return Math.max.apply(null, [0].concat(stages.map(function (s) { return point[s] || 0; })));
    }))));
    var plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM;
    svg.replaceChildren();
    axis(svg, String(top) + "/s");
    svg.appendChild(element("text", { x: WIDTH - RIGHT, y: HEIGHT - 8, "class": "tick", "text-anchor": "end" }, "now"));
    stages.forEach(function (stage, index) {
      var points = history.map(function (point, i) {
        var x = LEFT + plotW * (HISTORY - history.length + i) / (HISTORY - 1);
        var y = TOP + plotH * (1 - (point[stage] || 0) / top);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      if (points.length) {
        svg.appendChild(element("polyline", { points: points.join(" "), "class": "line series-" + (index + 1) },
          undefined)).appendChild(element("title", {}, stage));
      }
    });
  }

  function drawLatency(agents, ceiling) {
    var svg = document.getElementById("latency-chart");
    if (!svg) return;
    svg.replaceChildren();
    var shown = function (ms) { return ms === null ? ceiling : ms; };
    var top = niceTop(Math.max.apply(null, [0].concat(agents.map(function (a) { return shown(a[1].p95_ms); }))));
    var plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM;
    axis(svg, top + " ms");
    if (!agents.length) {
      svg.appendChild(element("text", { x: LEFT + 12, y: TOP + plotH / 2, "class": "tick" }, "no agent calls yet"));
      return;
    }
    var slot = plotW / agents.length, bar = Math.min(28, slot / 3);
    agents.forEach(function (entry, i) {
      var x = LEFT + slot * i + slot / 2;
      [["p50", entry[1].p50_ms, x - bar], ["p95", entry[1].p95_ms, x]].forEach(function (b) {
        var h = plotH * shown(b[1]) / top;
        svg.appendChild(element("rect", { x: b[2].toFixed(1), y: (TOP + plotH - h).toFixed(1),
          width: bar.toFixed(1), height: h.toFixed(1), "class": "bar bar-" + b[0] }))
          .appendChild(element("title", {}, entry[0] + " " + b[0] + ": " + latency(b[1], 1, ceiling)));
      });
      svg.appendChild(element("text", { x: x.toFixed(1), y: HEIGHT - 10, "class": "tick", "text-anchor": "middle" }, entry[0]));
    });
  }

  function inProgress(s) {
    if (s.calls_in_progress === null) return NONE;
    var more = s.calls_counted_all ? "" : "+";
    return s.calls_in_progress + more + " of " + s.live_calls + more + " live";
  }

  function follow(main) {
    var ceiling = Number(main.getAttribute("data-latency-ceiling-ms"));
    var history = [];
    var status = document.getElementById("feed-status");
    var feed = new EventSource(main.getAttribute("data-feed"));

    feed.addEventListener("snapshot", function (event) {
      var reading = JSON.parse(event.data), s = reading.snapshot, r = reading.rates;
      setText("turns-per-sec", r ? perSec(r.total) : NONE);
      setText("error-rate", r ? share(r.error_rate) : NONE);
      setText("rejection-rate", r ? share(r.rejection_rate) : NONE);
      setText("in-flight", String(s.in_flight));
      setText("calls-in-progress", inProgress(s));
      setText("calls-started", String(s.calls_started));
      setText("calls-completed", String(s.calls_completed));
      setText("redis-health", redisText(s.redis));
      document.getElementById("redis-health").className = s.redis.unavailable === null ? "health-ok" : "health-bad";
      applyCounts(s, r);
      applyAgents(s, ceiling);
      if (r) {
        history.push(r.by_stage);
        if (history.length > HISTORY) history.shift();
      }
      drawTurns(history, Object.keys(s.turns));
      var time = document.getElementById("updated-at");
      time.setAttribute("datetime", reading.at);
      // As the server writes it (rendering.moment): "2025-05-01 12:00:00.123 UTC".
      time.textContent = reading.at.slice(0, 10) + " " + reading.at.slice(11, 23) + " UTC";
      status.classList.remove("feed-stopped");
      main.setAttribute("data-updated-at", reading.at);
    });
    feed.addEventListener("error", function () {
      // A feed that ends is reopened by the browser; one refused (the session ended) is not.
      if (feed.readyState === EventSource.CLOSED) {
        status.classList.add("feed-stopped");
        status.textContent = "The live figures stopped (signed out, or the service is gone): reload the page.";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.querySelector("main[data-feed]");
    if (main && window.EventSource) follow(main);
  });
})();
