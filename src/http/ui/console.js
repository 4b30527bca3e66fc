// The console's one script: live rows in the job table and a live job page. Every page reads
// and acts the same without it.
"use strict";

(() => {
  const table = document.querySelector("[data-live-table]");
  if (table && window.EventSource) {
    const newRows = table.dataset.newRows;
    const asked = new Set();
    const show = (id, state) => {
      const cell = document.querySelector(`#job-${id} td[data-state]`);
      if (!cell) return false;
      cell.textContent = state;
      cell.className = `state-${state}`;
      cell.dataset.state = state;
      return true;
    };
    const onJob = async (message) => {
      const event = JSON.parse(message.data);
      if (show(event.id, event.state)) return;
      // A job not in the table: on the first page, its row goes on top if it matches.
      if (newRows === undefined || asked.has(event.id)) return;
      asked.add(event.id);
      const query = newRows ? `?${newRows}` : "";
      const answer = await fetch(`/ui/live/rows/${event.id}${query}`, { credentials: "same-origin" });
      if (answer.status !== 200 || document.getElementById(`job-${event.id}`)) return;
      const body = table.tBodies[0];
      const rows = document.createElement("tbody");
      rows.innerHTML = await answer.text();
      if (rows.firstElementChild) body.prepend(rows.firstElementChild);
    };
    // The stream is held only while the page is seen: a browser opens six connections to one
    // server over HTTP/1.1, and streams held by pages in other tabs, or left behind (also in
    // the back-forward cache), would use them up until the next request waits for one.
    let events = null;
    const follow = () => {
      events = new EventSource("/ui/live/events");
      events.addEventListener("job", onJob);
    };
    const stop = () => {
      if (events) events.close();
      events = null;
    };
    if (!document.hidden) follow();
    document.addEventListener("visibilitychange", async () => {
      if (document.hidden) {
        stop();
        return;
      }
      if (events) return;
      follow();
      // What moved while the page was not seen: each row's state, read again.
      for (const row of table.querySelectorAll("tr[id^='job-']")) {
        const id = row.id.slice(4);
        const answer = await fetch(`/ui/live/jobs/${id}`, { credentials: "same-origin" });
        if (answer.ok) show(id, (await answer.json()).state);
      }
    });
    window.addEventListener("pagehide", stop);
    window.addEventListener("pageshow", (e) => {
      if (e.persisted) window.location.reload();
    });
  }

  const page = document.querySelector("[data-live-job]");
  if (page && page.dataset.terminal !== "true") {
    const id = page.dataset.liveJob;
    const state = document.getElementById("job-state");
    const bar = document.getElementById("job-progress");
    // Every half second, so a cancel or an end shows within a second.
    const tick = async () => {
      let live;
      try {
        const answer = await fetch(`/ui/live/jobs/${id}`, { credentials: "same-origin" });
        if (!answer.ok) return;
        live = await answer.json();
      } catch (_) {
        setTimeout(tick, 2000);
        return;
      }
      if (live.terminal) {
        // The output, attempts and log are on the page as the server draws it.
        window.location.reload();
        return;
      }
      state.textContent = live.state;
      state.className = `state-${live.state}`;
      if (bar && live.total !== null) {
        bar.max = Math.max(live.total, 1);
        bar.value = live.done;
        bar.nextElementSibling.textContent = ` ${live.done}/${live.total}`;
      }
      setTimeout(tick, 500);
    };
    setTimeout(tick, 500);
  }
})();
