/**
 * The report page's script (plain ES5-level JavaScript, inlined): a hover
 * readout on the charts and a details panel for the clicked step. It builds
 * text with textContent only, so nothing from the store becomes markup.
 */
export const SCRIPT = `(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tg-data").textContent);
  var M = { top: 16, right: 16, bottom: 40, left: 64 };
  function fmt(v) {
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e6 || a < 1e-3) return v.toExponential(2);
    return String(Number(v.toPrecision(5)));
  }
  Array.prototype.forEach.call(document.querySelectorAll("figure.chart"), function (fig, ci) {
    var chart = data.charts[ci];
    var svg = fig.querySelector("svg");
    if (!chart || !svg) return;
    var W = +fig.getAttribute("data-w"), H = +fig.getAttribute("data-h");
    var iw = W - M.left - M.right, ih = H - M.top - M.bottom;
    var x0 = +fig.getAttribute("data-x0"), x1 = +fig.getAttribute("data-x1");
    var y0 = +fig.getAttribute("data-y0"), y1 = +fig.getAttribute("data-y1");
    var hover = svg.querySelector(".hover"), cursor = svg.querySelector(".cursor"), dot = svg.querySelector(".dot");
    var readout = fig.querySelector(".readout");
    svg.addEventListener("mousemove", function (ev) {
      var r = svg.getBoundingClientRect();
      var px = ((ev.clientX - r.left) * W) / r.width, py = ((ev.clientY - r.top) * H) / r.height;
      var best = null;
      chart.series.forEach(function (s) {
        s.points.forEach(function (p) {
          var sx = M.left + ((p[0] - x0) / (x1 - x0)) * iw;
          var sy = M.top + ih - ((p[1] - y0) / (y1 - y0)) * ih;
          var d = Math.abs(sx - px) + 0.25 * Math.abs(sy - py);
          if (best === null || d < best.d) best = { d: d, sx: sx, sy: sy, p: p, s: s };
        });
      });
      if (best === null) return;
      hover.style.display = "inline";
      cursor.setAttribute("x1", best.sx);
      cursor.setAttribute("x2", best.sx);
      dot.setAttribute("cx", best.sx);
      dot.setAttribute("cy", best.sy);
      readout.textContent = best.s.label + " \\u00b7 step " + best.p[0] + ": " + fmt(best.p[1]);
    });
    svg.addEventListener("mouseleave", function () {
      hover.style.display = "none";
      readout.textContent = "";
    });
  });
  var panel = document.getElementById("details");
  function row(table, k, v) {
    var tr = document.createElement("tr");
    var th = document.createElement("th");
    var td = document.createElement("td");
    th.textContent = k;
    td.textContent = v;
    tr.appendChild(th);
    tr.appendChild(td);
    table.appendChild(tr);
  }
  function show(name) {
    var n = data.nodes[name];
    if (!n || !panel) return;
    panel.className = "details";
    panel.textContent = "";
    var title = document.createElement("h3");
    title.textContent = n.node + " (" + (n.plugin === "source" ? "source" : n.plugin + "@" + n.version) + ")";
    panel.appendChild(title);
    var t = document.createElement("table");
    row(t, "status", n.status + (n.status === "cached" ? " (computed in run " + n.computedIn + ")" : ""));
    row(t, "started", n.startedAt);
    if (n.ms !== null) row(t, "time", (n.ms / 1000).toFixed(2) + " s");
    if (n.backend) row(t, "backend", n.backend);
    if (n.plugin !== "source") row(t, "params", JSON.stringify(n.params));
    Object.keys(n.outputs).forEach(function (k) { row(t, "output " + k, "sha256:" + n.outputs[k]); });
    Object.keys(n.metrics).forEach(function (k) { row(t, k, fmt(n.metrics[k])); });
    if (n.error) row(t, "error", n.error);
    panel.appendChild(t);
    Array.prototype.forEach.call(document.querySelectorAll(".dag .node"), function (g) {
      g.classList.toggle("selected", g.getAttribute("data-node") === name);
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll(".dag .node, table.steps tr[data-node]"), function (el) {
    el.addEventListener("click", function () { show(el.getAttribute("data-node")); });
    el.addEventListener("keydown", function (ev) { if (ev.key === "Enter") show(el.getAttribute("data-node")); });
  });
})();
`
