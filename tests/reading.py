"""The visible prose of a page, counted one way everywhere (the lesson's reading budget).

What counts: the main area's titles, headers, subheaders, markdown, captions and callouts (info,
warning, success, error), as the page draws them when it is opened once. A code span counts as one
word. What does not: code blocks, widget labels, tables and metrics, the sidebar, anything inside a
collapsed expander or a status box, a tab other than the first, and the knowledge-check form.
"""

from __future__ import annotations

import re

from streamlit.testing.v1.element_tree import AlertBase, Block, Caption, Divider, HeadingBase, Latex, Markdown

BUDGET = 600  # words of visible prose per page, before any experiment

CODE_SPAN = re.compile(r"`[^`]+`")
WORD = re.compile(r"[\w\d][\w\d'’.,:/@%+-]*")
HTML_TAG = re.compile(r"<[^>]+>")


def words(text: str) -> int:
    """Words as a reader counts them: a code span is one, markup and table rules are none."""
    text = CODE_SPAN.sub(" codespan ", text)
    text = HTML_TAG.sub(" ", text)
    return len(WORD.findall(text))


def _hidden(block: Block) -> bool:
    if block.type in ("expander", "status"):
        return not getattr(block.proto, "expanded", False)
    if block.type in ("popover", "dialog"):
        return True
    if block.type == "form":
        return block.proto.form.form_id.startswith("check_form_")
    return False


def prose(node) -> list[str]:
    """The visible prose under `node`, in page order."""
    if isinstance(node, Block):
        if _hidden(node):
            return []
        children = [node.children[k] for k in sorted(node.children)]
        if node.type == "tab_container":
            children = children[:1]
        return [text for child in children for text in prose(child)]
    if isinstance(node, Divider | Latex):
        return []
    if isinstance(node, HeadingBase | Markdown | Caption | AlertBase):
        return [str(node.value)]
    return []


def visible_words(at) -> int:
    return sum(words(text) for text in prose(at.main))
