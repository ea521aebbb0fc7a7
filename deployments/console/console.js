// mediamatch web console: confirmations, and a reindex job's progress polled until it ends.
"use strict";

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

function followJob(panel) {
  const show = (job) => {
    panel.dataset.state = job.state;
    const state = document.getElementById("state");
    state.textContent = job.state;
    state.className = "state " + job.state;
    document.getElementById("progress").value = job.progress;
    document.getElementById("percent").textContent = Math.round(100 * job.progress) + "%";
    document.getElementById("message").textContent = job.message;
    const error = document.getElementById("job-error");
    error.textContent = job.error || "";
    error.hidden = !job.error;
    const versions = document.getElementById("versions");
    versions.replaceChildren(...Object.entries(job.versions).map(([name, version]) => {
      const code = document.createElement("code");
      code.textContent = name + " " + version + " ";
      return code;
    }));
  };
  const poll = async () => {
    try {
      const response = await fetch(panel.dataset.status, { credentials: "same-origin" });
      if (!response.ok) throw new Error("status " + response.status);
      show(await response.json());
    } catch (err) {
      document.getElementById("message").textContent = "progress unavailable (" + err.message + "), retrying";
    }
    if (panel.dataset.state !== "succeeded" && panel.dataset.state !== "failed") setTimeout(poll, 1000);
  };
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  const job = document.getElementById("job");
  if (job) followJob(job);
});
