"""Writes golden.json: each *.jinja template here rendered by jinja2 for the
conversations below, the way transformers' apply_chat_template renders it
(a sandboxed environment with trim_blocks and lstrip_blocks,
add_generation_prompt on, bos_token "<s>" taken off the front, eos_token
"</s>", strftime_now dated 5 Nov 2026). A conversation a template refuses
(raise_exception) is left out of that template's renders.

    python3 golden.py   # jinja2 3.1.6
"""
import datetime
import glob
import json

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

BOS, EOS = "<s>", "</s>"


def raise_exception(message):
    raise TemplateError(message)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = lambda x, **kw: json.dumps(x, **kw)
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda fmt: datetime.datetime(2026, 11, 5).strftime(fmt)


def msg(role, content):
    return {"role": role, "content": content}


S, U1, A1, U2 = msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Name a color.")
CONVERSATIONS = {
    "conv": [S, U1, A1, U2],
    "user": [U1],
    "system-user": [S, U1],
    "no-system": [U1, A1, U2],
    "three-turns": [S, U1, A1, U2, msg("assistant", "Blue."), msg("user", "Another?")],
    "ends-assistant": [S, U1, A1],
    "padded": [msg("system", " Be brief.\n"), msg("user", "\n Hi "), msg("assistant", "  Hello! "), msg("user", " Name a color. ")],
    "padded-no-system": [msg("user", "\n Hi "), msg("assistant", "  Hello! "), msg("user", " Name a color. ")],
    "empty-system": [msg("system", ""), msg("user", " padded \n")],
    "only-system": [S],
}


def render(path):
    template = env.from_string(open(path, encoding="utf-8").read())
    out = {}
    for name, msgs in CONVERSATIONS.items():
        try:
            text = template.render(messages=msgs, bos_token=BOS, eos_token=EOS, add_generation_prompt=True)
        except TemplateError:
            continue
        out[name] = text[len(BOS):] if text.startswith(BOS) else text
    return out


golden = {
    "conversations": CONVERSATIONS,
    "renders": {path: render(path) for path in sorted(glob.glob("*.jinja"))},
}
with open("golden.json", "w", encoding="utf-8") as f:
    json.dump(golden, f, indent=1, sort_keys=True, ensure_ascii=False)
    f.write("\n")
