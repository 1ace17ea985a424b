#!/usr/bin/env bash
# Print the path of a working python<VERSION> (e.g. 3.10), or explain how to install one and exit 1.
set -u
want=${1:?usage: find-python.sh 3.10}
candidates=("python$want" /usr/bin/python$want /usr/local/bin/python$want)
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for d in "$root"/versions/"$want"*/bin/python"$want"; do candidates+=("$d"); done
for py in "${candidates[@]}"; do
  if "$py" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$want'" >/dev/null 2>&1; then
    command -v "$py"
    exit 0
  fi
done
cat >&2 <<MSG
error: no working python$want found (tried: ${candidates[*]}).
Rasa Open Source 3.6 needs Python 3.8-3.10. Install one of:
  Debian/Ubuntu: apt-get install python$want python$want-venv   (Ubuntu: add the deadsnakes PPA first)
  pyenv:         pyenv install $want && make setup-chatbot
or run: make setup-chatbot PY310=/path/to/python$want
MSG
exit 1
