"""An Ollama ``Modelfile`` for a GGUF: the chat template as a Go template (derived by rendering probe
conversations), the default system message the template inserts, the turn's end as a stop string,
the run's temperature."""

from __future__ import annotations

from typing import Any


def ollama_template(tokenizer: Any) -> tuple[str, str | None, list[str]]:
    """The chat template as an Ollama Go template, the default system message it inserts (or None) and
    the stop strings (the end of a turn). Derived by rendering probe conversations: any template whose
    turns are ``prefix(role) + content + suffix`` (ChatML and its kin) works; others are refused."""
    marks = {"system": "\x01S\x01", "user": "\x01U\x01", "assistant": "\x01A\x01"}
    conv = [{"role": r, "content": m} for r, m in marks.items()]
    full = tokenizer.apply_chat_template(conv, tokenize=False)
    refused = ValueError(
        "GGUF export: the chat template's turns are not prefix + content + suffix; no Modelfile"
    )
    pieces, rest = [], full
    for mark in marks.values():
        before, found, rest = rest.partition(mark)
        if not found:
            raise refused
        pieces.append(before)
    end = rest  # every turn ends with it
    if not end or not (pieces[1].startswith(end) and pieces[2].startswith(end)):
        raise refused
    prefix = {"system": pieces[0], "user": pieces[1][len(end) :], "assistant": pieces[2][len(end) :]}
    with_prompt = tokenizer.apply_chat_template(conv[:2], tokenize=False, add_generation_prompt=True)
    generation = with_prompt.split(marks["user"], 1)[1]
    if not generation.startswith(end):
        raise refused
    generation = generation[len(end) :]
    head = tokenizer.apply_chat_template(conv[1:2], tokenize=False).split(marks["user"], 1)[0]
    if not head.endswith(prefix["user"]):
        raise refused
    head = head[: len(head) - len(prefix["user"])]
    default_system, start = None, head  # no default system: what comes before the first turn
    if (
        head.startswith(prefix["system"])
        and head.endswith(end)
        and len(head) > len(prefix["system"]) + len(end)
    ):
        default_system, start = head[len(prefix["system"]) : len(head) - len(end)], ""
    body = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go(prefix[role])}{{{{ .Content }}}}{_go(end)}'
        for i, role in enumerate(prefix)
    )
    template = f"{_go(start)}{{{{ range .Messages }}}}{body}{{{{ end }}}}{{{{ end }}}}{_go(generation)}"
    return template, default_system, [end.strip()] if end.strip() else []


def _go(text: str) -> str:
    """Literal text inside a Go template (only ``{{`` needs escaping)."""
    return text.replace("{{", '{{ "{{" }}')


def modelfile(gguf_name: str, tokenizer: Any, temperature: float | None) -> str:
    template, system, stops = ollama_template(tokenizer)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"
