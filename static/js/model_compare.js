// The model comparison page: every version's training loss curve on one chart.
document.addEventListener("DOMContentLoaded", function () {
  const data = document.getElementById("compare-curves");
  const canvas = document.getElementById("compare-loss-chart");
  if (!data || !canvas || !window.Chart) return;
  const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
  const datasets = JSON.parse(data.textContent).map((curve, index) => ({
    label: curve.name, borderColor: palette[index % palette.length], pointRadius: 0,
    data: (curve.charts.train_loss || []).map(([x, y]) => ({ x, y })),
  }));
  new Chart(canvas, {
    type: "line", data: { datasets },
    options: { animation: false, parsing: false, maintainAspectRatio: false, scales: { x: { type: "linear", title: { display: true, text: "step" } } } },
  });
});
