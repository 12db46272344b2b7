// cmirm report: sortable tables, paging and filtering of the index, one player at a time.
(function () {
  "use strict";

  function cellValue(row, col, numeric) {
    var cell = row.cells[col];
    var raw = cell ? cell.getAttribute("data-v") : null;
    if (raw === null || raw === "") return null;
    if (!numeric) return raw.toLowerCase();
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }

  function sortBy(table, th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    // First click: numbers best (largest) first, text A-Z; then toggle.
    var descending = current ? current === "ascending" : numeric;
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, position) { row._position = position; });
    rows.sort(function (a, b) {
      var x = cellValue(a, col, numeric), y = cellValue(b, col, numeric);
      if (x === null || y === null) {
        if (x === y) return a._position - b._position;
        return x === null ? 1 : -1; // missing values always last
      }
      if (x < y) return descending ? 1 : -1;
      if (x > y) return descending ? -1 : 1;
      return a._position - b._position;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    if (table._refresh) table._refresh();
  }

  function setupPaging(table) {
    var size = parseInt(table.getAttribute("data-page-size"), 10);
    var filter = document.getElementById("filter");
    var info = document.getElementById("page-info");
    var page = 0;
    function matching() {
      var query = filter ? filter.value.trim().toLowerCase() : "";
      return Array.prototype.filter.call(table.tBodies[0].rows, function (row) {
        return !query || row.textContent.toLowerCase().indexOf(query) >= 0;
      });
    }
    table._refresh = function () {
      var rows = matching();
      var pages = Math.max(1, Math.ceil(rows.length / size));
      page = Math.min(Math.max(page, 0), pages - 1);
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) { row.hidden = true; });
      rows.slice(page * size, (page + 1) * size).forEach(function (row) { row.hidden = false; });
      if (info) info.textContent = "page " + (page + 1) + " of " + pages + " (" + rows.length + " instructions)";
    };
    var prev = document.getElementById("page-prev"), next = document.getElementById("page-next");
    if (prev) prev.addEventListener("click", function () { page -= 1; table._refresh(); });
    if (next) next.addEventListener("click", function () { page += 1; table._refresh(); });
    if (filter) filter.addEventListener("input", function () { page = 0; table._refresh(); });
    table._refresh();
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th[data-type]").forEach(function (th) {
      th.addEventListener("click", function () { sortBy(table, th); });
    });
    if (table.hasAttribute("data-page-size")) setupPaging(table);
  });

  // One player at a time: starting a clip pauses the others.
  document.addEventListener("play", function (event) {
    document.querySelectorAll("audio").forEach(function (audio) {
      if (audio !== event.target) audio.pause();
    });
  }, true);
})();
