// Charts of the agreement dashboard, drawn by Chart.js from the report stored with the page (json_script).
(function () {
  "use strict";

  const COLOURS = { A: "#2f7ed8", TIE: "#9aa5b1", B: "#e8743b" };

  function draw() {
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
          datasets: [{ label: "judgments", data: data.per_day.map((row) => row.judgments), backgroundColor: "#2f7ed8" }],
        },
        options: { plugins: { legend: { display: false } }, animation: false },
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
          })),
        },
        options: { scales: { x: { stacked: true }, y: { stacked: true } }, animation: false },
      });
    }

    const alpha = document.getElementById("chart-alpha");
    if (alpha) {
      new Chart(alpha, {
        type: "bar",
        data: {
          labels: dims,
          datasets: [
            { label: "95 % interval", data: dims.map((d) => [data.alpha[d].ci_low, data.alpha[d].ci_high]),
              backgroundColor: "rgba(47,126,216,0.35)", barPercentage: 0.4 },
            { type: "scatter", label: "α", data: dims.map((d) => ({ x: d, y: data.alpha[d].value })),
              backgroundColor: "#1d3f6e", pointRadius: 5 },
          ],
        },
        options: { scales: { y: { min: -0.2, max: 1 } }, animation: false },
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
            { label: "95 % interval", data: ranking.map((row) => [row.ci_low, row.ci_high]),
              backgroundColor: "rgba(232,116,59,0.35)", barPercentage: 0.4 },
            { type: "scatter", label: "BT score (log scale, centred)",
              data: ranking.map((row) => ({ x: row.generator, y: row.score })), backgroundColor: "#8a3a12", pointRadius: 5 },
          ],
        },
        options: { indexAxis: "x", animation: false },
      });
    });

    document.querySelectorAll(".kappa-cell").forEach((cell) => {
      const value = parseFloat(cell.dataset.kappa);
      if (!Number.isNaN(value)) cell.style.background = `rgba(47,126,216,${Math.max(0, Math.min(1, value)) * 0.6})`;
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
