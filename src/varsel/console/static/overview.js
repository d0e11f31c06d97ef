// Draws the overview's charts (uPlot bars: one chart per channel, a bar per status) from the page's JSON block.
(function () {
  "use strict";
  function draw() {
    var block = document.getElementById("overview-data");
    var holder = document.getElementById("charts");
    if (!block || !holder || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(block.textContent);
    var groups = data.channels.map(function (c) { return { title: c.channel + " notifications by status", s: c }; })
      .concat(data.orders.map(function (o) { return { title: o.channel + " orders by status", s: o }; }));
    groups.forEach(function (group) {
      if (!group.s.counts.length) { return; }
      var figure = document.createElement("figure");
      figure.className = "chart";
      figure.setAttribute("data-chart", group.title);
      var caption = document.createElement("figcaption");
      caption.textContent = group.title;
      figure.appendChild(caption);
      holder.appendChild(figure);
      var labels = group.s.statuses;
      var xs = labels.map(function (_, i) { return i; });
      new uPlot({
        width: 520, height: 220,
        scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: function (u, min, max) { return [0, Math.max(1, max) * 1.1]; } } },
        axes: [{ values: function (u, splits) { return splits.map(function (i) { return labels[i] || ""; }); }, splits: function () { return xs; } }, {}],
        legend: { show: false },
        series: [{}, { label: "count", fill: "rgba(31, 94, 200, 0.6)", stroke: "#1f5ec8", paths: uPlot.paths.bars({ size: [0.6] }), points: { show: false } }]
      }, [xs, group.s.counts], figure);
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
