#!/usr/bin/env bash
# Install the one-folder app for the current user (no root): the bundle in ~/.local/opt/Restora,
# a `Restora` link in ~/.local/bin, the menu entry and its icon.
#   packaging/linux/install.sh [dist/Restora]        (uninstall: packaging/linux/install.sh --remove)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
target="$HOME/.local/opt/Restora"
if [ "${1:-}" = "--remove" ]; then
    rm -rf "$target" "$HOME/.local/bin/Restora" "$data/applications/restora.desktop" \
        "$data/icons/hicolor/512x512/apps/restora.png"
    echo "Restora removed (settings and downloaded models are kept in your user folders)"
    exit 0
fi
bundle="${1:-$here/../../dist/Restora}"
[ -x "$bundle/Restora" ] || { echo "no app at $bundle; run \`make app\` first" >&2; exit 1; }
rm -rf "$target"
mkdir -p "$(dirname "$target")" "$HOME/.local/bin" "$data/applications" "$data/icons/hicolor/512x512/apps"
cp -a "$bundle" "$target"
ln -sf "$target/Restora" "$HOME/.local/bin/Restora"
cp "$target/_internal/assets/icons/restora.png" "$data/icons/hicolor/512x512/apps/restora.png"
sed "s|^Exec=.*|Exec=\"$target/Restora\" %F|" "$here/restora.desktop" > "$data/applications/restora.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" || true
echo "Restora installed in $target; start it from the menu or with: Restora"
