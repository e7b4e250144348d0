// The dashboard works without this script; it only adds "select all" to
// the jobs table's checkboxes.
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box.classList || !box.classList.contains("select-all")) return;
  var table = box.closest("table");
  if (!table) return;
  table.querySelectorAll('input[type="checkbox"][name="id"]').forEach(function (b) {
    b.checked = box.checked;
  });
});
