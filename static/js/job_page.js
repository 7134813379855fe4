// The job page's charts: training loss by step and validation accuracy per dimension. Redrawn after each
// htmx poll has settled the live panel in (the canvases are new elements then).
(function () {
  const COLOURS = { VQ: "#1f77b4", MQ: "#ff7f0e", TA: "#2ca02c", loss: "#555" };
  const ORDER = ["VQ", "MQ", "TA"];  // the metrics come back from jsonb with their keys sorted: put them in order
  const rank = (dim) => (ORDER.includes(dim) ? ORDER.indexOf(dim) : ORDER.length);

  function lineChart(canvas, datasets, yTitle) {
    if (!canvas || !window.Chart) return;
    new Chart(canvas, {
      type: "line",
      data: { datasets },
      options: {
        animation: false, parsing: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { title: { display: true, text: yTitle } } },
        plugins: { legend: { display: datasets.length > 1 } },
      },
    });
  }

  function points(pairs) { return (pairs || []).map(([x, y]) => ({ x, y })); }

  function draw() {
    const data = document.getElementById("job-chart-data");
    if (!data) return;
    const charts = JSON.parse(data.textContent);
    lineChart(document.getElementById("job-loss-chart"),
      [{ label: "training loss", data: points(charts.train_loss), borderColor: COLOURS.loss, pointRadius: 0 }], "loss");
    const accuracy = charts.val_accuracy_without_ties || {};
    const dims = Object.keys(accuracy).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const sets = dims.filter((dim) => accuracy[dim].length).map((dim) => ({
      label: dim + " accuracy w/o ties", data: points(accuracy[dim]), borderColor: COLOURS[dim],
    }));
    if (sets.length) lineChart(document.getElementById("job-accuracy-chart"), sets, "accuracy");
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);  // after htmx has restored the new elements' attributes
})();
