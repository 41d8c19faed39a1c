#!/usr/bin/env bash
# Register CXR Studio with a Linux desktop: menu entry, icons, and the DICOM file type, so that
# radiographs open with it. Per user (no root), under $XDG_DATA_HOME (default ~/.local/share).
#
#   ./install_desktop.sh                 # inside the bundle folder (build.sh copies it there), or
#   packaging/install_desktop.sh         # from a checkout: uses the `cxr-studio` on PATH (pip install)
#   ... --uninstall                      # removes what it installed
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
SIZES="16 24 32 48 64 128 256"

refresh() {
  if command -v update-mime-database >/dev/null && [[ -d "$DATA/mime/packages" ]]; then
    update-mime-database "$DATA/mime"
  fi
  if command -v update-desktop-database >/dev/null && [[ -d "$DATA/applications" ]]; then
    update-desktop-database -q "$DATA/applications" || true
  fi
  if command -v gtk-update-icon-cache >/dev/null && [[ -d "$DATA/icons/hicolor" ]]; then
    gtk-update-icon-cache -q -t -f "$DATA/icons/hicolor" || true
  fi
}

if [[ "${1:-}" == "--uninstall" ]]; then
  rm -f "$DATA/applications/cxr-studio.desktop" "$DATA/mime/packages/cxr-studio-dicom.xml" \
        "$DATA/icons/hicolor/scalable/apps/cxr-studio.svg"
  for s in $SIZES; do rm -f "$DATA/icons/hicolor/${s}x${s}/apps/cxr-studio.png"; done
  refresh
  echo "CXR Studio removed from the desktop menu and file types."
  exit 0
fi

if [[ -x "$HERE/cxr-studio" && -d "$HERE/_internal/resources" ]]; then   # inside a bundle
  EXE="$HERE/cxr-studio"; RES="$HERE/_internal/resources"
else                                                                     # a checkout + pip install
  RES="$(cd "$HERE/.." && pwd)/resources"
  EXE="$(command -v cxr-studio || true)"
  [[ -n "$EXE" ]] || { echo "install_desktop.sh: cxr-studio is not on PATH (pip install it first)" >&2; exit 1; }
fi

for s in $SIZES; do
  install -Dm644 "$RES/icons/cxr-studio-$s.png" "$DATA/icons/hicolor/${s}x${s}/apps/cxr-studio.png"
done
install -Dm644 "$RES/icons/cxr-studio.svg" "$DATA/icons/hicolor/scalable/apps/cxr-studio.svg"
install -Dm644 "$RES/mime/cxr-studio-dicom.xml" "$DATA/mime/packages/cxr-studio-dicom.xml"
# Exec must name the real program: quote a path with spaces (desktop entry quoting rules).
exec_path="$EXE"
[[ "$EXE" == *" "* ]] && exec_path="\"$EXE\""
mkdir -p "$DATA/applications"
tmp="$(mktemp "$DATA/applications/.cxr-studio.XXXXXX")"
sed -e "s|^Exec=cxr-studio|Exec=$exec_path|" -e "s|^TryExec=cxr-studio|TryExec=$EXE|" \
    "$RES/cxr-studio.desktop" > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$DATA/applications/cxr-studio.desktop"
refresh
echo "CXR Studio is in the applications menu ($DATA/applications/cxr-studio.desktop); DICOM files open with it."
