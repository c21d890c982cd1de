// Charts of a campaign's report (funnel, failure reasons, provinces, click heatmap, A/B
// comparison), drawn with Apache ECharts from the panel's data-chart attribute (JSON), and drawn
// again after each htmx refresh of the panel. Every chart has its table beside it; without
// JavaScript the tables remain.
(function () {
  "use strict";
  var charts = [];

  function chart(id, option) {
    // Found by data attribute, not id: htmx copies an old element's attributes (echarts' inline
    // style among them) onto the new element of the same id while it settles.
    var el = document.querySelector('[data-chart-id="' + id.replace("chart-", "") + '"]');
    if (!el || typeof echarts === "undefined") return;
    var c = echarts.init(el, null, { renderer: "svg" });
    option.animation = false;
    c.setOption(option);
    charts.push(c);
    el.setAttribute("data-ready", "true");
  }

  function draw() {
    charts.forEach(function (c) { c.dispose(); });
    charts = [];
    var node = document.getElementById("report-panel");
    if (!node || !node.dataset.chart) return;
    var d = JSON.parse(node.dataset.chart);
    var pct = function (v) { return (100 * v).toFixed(1) + "%"; };
    chart("chart-funnel", {
      tooltip: { trigger: "item" },
      series: [{ type: "funnel", sort: "none", left: "10%", width: "80%", minSize: "8%",
                 label: { formatter: "{b}: {c}" },
                 data: d.funnel.map(function (s) { return { name: s[0], value: s[1] }; }) }]
    });
    chart("chart-failures", {
      tooltip: { trigger: "item" },
      series: [{ type: "pie", radius: ["35%", "65%"], label: { formatter: "{b}: {c}" },
                 data: d.failures.map(function (f) { return { name: f[0], value: f[1] }; }) }]
    });
    chart("chart-provinces", {
      tooltip: { trigger: "axis" },
      legend: { data: [d.labels.delivered, d.labels.clicked] },
      grid: { left: 70, right: 20, top: 40, bottom: 30 },
      xAxis: { type: "value" },
      yAxis: { type: "category", inverse: true, data: d.provinces.map(function (p) { return p[0]; }) },
      series: [
        { name: d.labels.delivered, type: "bar", data: d.provinces.map(function (p) { return p[1]; }) },
        { name: d.labels.clicked, type: "bar", data: d.provinces.map(function (p) { return p[2]; }) }
      ]
    });
    var hours = [];
    for (var h = 0; h < 24; h++) hours.push(String(h));
    var max = Math.max.apply(null, d.heatmap.cells.map(function (c) { return c[2]; }).concat([1]));
    chart("chart-heatmap", {
      tooltip: { position: "top" },
      grid: { left: 90, right: 20, top: 10, bottom: 70 },
      xAxis: { type: "category", data: hours, splitArea: { show: true } },
      yAxis: { type: "category", data: d.heatmap.dates, splitArea: { show: true } },
      visualMap: { min: 0, max: max, calculable: true, orient: "horizontal", left: "center", bottom: 0 },
      series: [{ type: "heatmap", label: { show: false },
                 data: d.heatmap.cells.map(function (c) { return [String(c[0]), c[1], c[2]]; }) }]
    });
    chart("chart-variants", {
      tooltip: { trigger: "axis", valueFormatter: pct },
      legend: { data: [d.labels.delivery_rate, d.labels.click_rate, d.labels.conversion_rate] },
      grid: { left: 60, right: 20, top: 40, bottom: 30 },
      xAxis: { type: "category", data: d.variants.map(function (v) { return v[0]; }) },
      yAxis: { type: "value", axisLabel: { formatter: pct } },
      series: [
        { name: d.labels.delivery_rate, type: "bar", data: d.variants.map(function (v) { return v[1]; }) },
        { name: d.labels.click_rate, type: "bar", data: d.variants.map(function (v) { return v[2]; }) },
        { name: d.labels.conversion_rate, type: "bar", data: d.variants.map(function (v) { return v[3]; }) }
      ]
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
  window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
})();
