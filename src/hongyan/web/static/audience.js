// Charts of the audience pages (RFM grid and groups, lifecycle funnel), drawn with Apache
// ECharts from the page's <script type="application/json" id="chart-data"> block. Every chart
// has its table beside it; without JavaScript the tables remain.
(function () {
  "use strict";

  function data() {
    var node = document.getElementById("chart-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  function chart(id, option) {
    var el = document.getElementById(id);
    if (!el || typeof echarts === "undefined") return null;
    var c = echarts.init(el, null, { renderer: "svg" });
    option.animation = false;  // drawn at once: a report, not a show
    c.setOption(option);
    window.addEventListener("resize", function () { c.resize(); });
    el.setAttribute("data-ready", "true");
    return c;
  }

  function draw() {
    var d = data();
    if (!d) return;
    if (d.heatmap) {
      var max = Math.max.apply(null, d.heatmap.map(function (x) { return x[2]; }).concat([1]));
      chart("rfm-heatmap", {
        tooltip: {
          formatter: function (p) {
            return "R" + (p.value[1] + 1) + " × F" + (p.value[0] + 1) + "<br>" +
              d.labels.buyers + ": " + p.value[2] + "<br>" + d.labels.revenue + ": " +
              p.value[3].toLocaleString();
          }
        },
        grid: { left: 60, right: 20, top: 20, bottom: 60 },
        xAxis: { type: "category", name: d.labels.f, nameLocation: "middle", nameGap: 30,
                 data: ["1", "2", "3", "4", "5"] },
        yAxis: { type: "category", name: d.labels.r, nameLocation: "middle", nameGap: 35,
                 data: ["1", "2", "3", "4", "5"] },
        visualMap: { min: 0, max: max, calculable: false, orient: "horizontal", left: "center",
                     bottom: 0, inRange: { color: ["#f4f8fb", "#2f6fa7"] } },
        series: [{ type: "heatmap", data: d.heatmap, label: { show: true,
                   formatter: function (p) { return p.value[2]; } } }]
      });
    }
    if (d.groups) {
      chart("rfm-groups", {
        tooltip: { trigger: "axis" },
        legend: { data: [d.labels.buyers, d.labels.revenue] },
        grid: { left: 110, right: 60, top: 30, bottom: 30 },
        yAxis: { type: "category", data: d.groups.map(function (g) { return g[0]; }), inverse: true },
        xAxis: [{ type: "value", name: d.labels.buyers }, { type: "value", name: d.labels.revenue }],
        series: [
          { name: d.labels.buyers, type: "bar", data: d.groups.map(function (g) { return g[1]; }) },
          { name: d.labels.revenue, type: "bar", xAxisIndex: 1,
            data: d.groups.map(function (g) { return g[2]; }) }
        ]
      });
    }
    if (d.funnel) {
      chart("lifecycle-funnel", {
        tooltip: { trigger: "item", formatter: "{b}: {c}" },
        series: [{ type: "funnel", sort: "none", left: "10%", width: "80%", minSize: "8%",
                   label: { show: true, position: "inside", formatter: "{b} {c}" },
                   data: d.funnel.map(function (s) { return { name: s[0], value: s[1] }; }) }]
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
