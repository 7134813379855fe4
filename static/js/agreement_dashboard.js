// Charts of the agreement dashboard, drawn by Chart.js from the report stored with the page (json_script).
// Every canvas sits in a .chart-box of fixed height (agreement.css) and fills it (maintainAspectRatio: false):
// left to its aspect ratio a chart in a narrow grid cell came out a few pixels high.
(function () {
  "use strict";

  const COLOURS = { A: "#2f7ed8", TIE: "#9aa5b1", B: "#e8743b" };
  const BASE = { responsive: true, maintainAspectRatio: false, animation: false };

  function options(extra) {
    return Object.assign({}, BASE, extra);
  }

  // κ from −1 (red) through 0 (white) to 1 (blue); the diagonal has no data-kappa and is left to the CSS (grey).
  function kappaColour(value) {
    const strength = Math.min(1, Math.abs(value));
    return value >= 0 ? `rgba(47,126,216,${0.08 + strength * 0.62})` : `rgba(192,57,43,${0.08 + strength * 0.62})`;
  }

  function draw() {
    document.querySelectorAll(".kappa-cell[data-kappa]").forEach((cell) => {
      const value = parseFloat(cell.dataset.kappa);
      if (Number.isNaN(value)) return;
      cell.style.background = kappaColour(value);
      if (Math.abs(value) > 0.55) cell.style.color = "#fff";
    });

    const source = document.getElementById("agreement-chart-data");
    if (!source || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    const dims = data.dimensions || [];

    const perDay = document.getElementById("chart-per-day");
    if (perDay) {
      new Chart(perDay, {
        type: "bar",
        data: {
          labels: data.per_day.map((row) => row.day),
          datasets: [{ label: "judgments", data: data.per_day.map((row) => row.judgments), backgroundColor: "#2f7ed8",
            maxBarThickness: 48 }],
        },
        options: options({ plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }),
      });
    }

    const distribution = document.getElementById("chart-distribution");
    if (distribution) {
      new Chart(distribution, {
        type: "bar",
        data: {
          labels: dims,
          datasets: ["A", "TIE", "B"].map((label) => ({
            label: label === "TIE" ? "tie" : label + " better",
            data: dims.map((dim) => (data.distribution[dim] || {})[label] || 0),
            backgroundColor: COLOURS[label],
            maxBarThickness: 64,
          })),
        },
        options: options({ scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }),
      });
    }

    const alpha = document.getElementById("chart-alpha");
    if (alpha) {
      const value = (d, key) => ((data.alpha[d] || {})[key] ?? null);
      new Chart(alpha, {
        type: "bar",
        data: {
          labels: dims,
          datasets: [
            { label: "95 % interval",
              data: dims.map((d) => (value(d, "ci_low") === null ? null : [value(d, "ci_low"), value(d, "ci_high")])),
              backgroundColor: "rgba(47,126,216,0.35)", barPercentage: 0.4 },
            { type: "scatter", label: "α", data: dims.map((d) => ({ x: d, y: value(d, "value") })),
              backgroundColor: "#1d3f6e", pointRadius: 5 },
          ],
        },
        options: options({ scales: { y: { min: -0.2, max: 1 } } }),
      });
    }

    dims.forEach((dim) => {
      const ranking = (data.generators || {})[dim] || [];
      const canvas = document.getElementById("chart-generators-" + dim);
      if (!canvas || !ranking.length) return;
      new Chart(canvas, {
        type: "bar",
        data: {
          labels: ranking.map((row) => row.generator),
          datasets: [
            { label: "95 % interval",
              data: ranking.map((row) => (row.ci_low === null ? null : [row.ci_low, row.ci_high])),
              backgroundColor: "rgba(232,116,59,0.35)", barPercentage: 0.4 },
            { type: "scatter", label: "BT log-strength (centred)",
              data: ranking.map((row) => ({ x: row.generator, y: row.score })), backgroundColor: "#8a3a12", pointRadius: 5 },
          ],
        },
        options: options({
          indexAxis: "x",
          scales: { y: { title: { display: true, text: "log-strength" } } },
          plugins: { tooltip: { callbacks: { afterLabel: (item) => `${ranking[item.dataIndex].comparisons} comparisons` } } },
        }),
      });
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
