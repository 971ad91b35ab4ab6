"""1. Data models, drawn from the live mappings: a Graphviz diagram of the tables and a table
of the ORM relationships, both read from the metadata and the mappers (never a copied picture)."""

from __future__ import annotations

import html
from typing import Any


def linked_tables(base: Any) -> list[Any]:
    """The tables with a foreign key or named by one, in dependency order."""
    named = {fk.column.table for table in base.metadata.sorted_tables for fk in table.foreign_keys}
    return [t for t in base.metadata.sorted_tables if t.foreign_keys or t in named]


def schema_diagram(base: Any, *, linked_only: bool = False) -> str:
    """Graphviz DOT of the mapped tables (only those linked by a foreign key, if asked), their
    columns and foreign keys, each foreign key labelled with the ORM relationships that use it:
    generated from the live metadata."""
    tables = linked_tables(base) if linked_only else base.metadata.sorted_tables
    edge_labels: dict[Any, str] = {}
    for mapper in base.registry.mappers:
        for rel in mapper.relationships:
            if rel.direction.name == "MANYTOONE":
                one_to_one = _is_one_to_one(rel)
                for column in rel.local_columns:
                    edge_labels[column] = f"{mapper.class_.__name__}.{rel.key} ({'1:1' if one_to_one else 'N:1'})  /  " \
                        f"{rel.mapper.class_.__name__}.{rel.back_populates} ({'1:1' if one_to_one else '1:N'})"
            elif rel.direction.name == "MANYTOMANY" and rel.secondary is not None:
                # The association table's foreign key to this mapper's table, labelled from this side.
                for column in rel.secondary.columns:
                    if any(fk.column.table is mapper.local_table for fk in column.foreign_keys):
                        edge_labels[column] = f"{mapper.class_.__name__}.{rel.key}  /  " \
                            f"{rel.mapper.class_.__name__}.{rel.back_populates} (M:N)"
    lines = [
        "digraph schema {",
        '  rankdir=LR; node [shape=plaintext, fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10, arrowhead=crow, arrowtail=tee, dir=both];',
    ]
    for table in tables:
        rows = "".join(
            f'<tr><td align="left" port="{c.name}">{"<b>PK</b> " if c.primary_key else ""}'
            f'{"<i>FK</i> " if c.foreign_keys else ""}{c.name}</td>'
            f'<td align="left"><font color="#555555">{html.escape(str(c.type))}'
            f'{"" if c.nullable is False or c.primary_key else " NULL"}</font></td></tr>'
            for c in table.columns
        )
        lines.append(
            f'  {table.name} [label=<<table border="0" cellborder="1" cellspacing="0" cellpadding="4">'
            f'<tr><td colspan="2" bgcolor="#dce8f5"><b>{table.name}</b></td></tr>{rows}</table>>];'
        )
    for table in tables:
        for fk in table.foreign_keys:
            label = html.escape(edge_labels.get(fk.parent, fk.parent.name), quote=True)
            lines.append(
                f'  {fk.column.table.name}:{fk.column.name} -> {table.name}:{fk.parent.name} '
                f'[label="{label}"];'
            )
    lines.append("}")
    return "\n".join(lines)


def relationships(base: Any) -> list[dict[str, str]]:
    """One row per ORM relationship of the mapped classes, read from the mappers."""
    rows = []
    for mapper in sorted(base.registry.mappers, key=lambda m: m.class_.__name__):
        for rel in mapper.relationships:
            rows.append({
                "attribute": f"{mapper.class_.__name__}.{rel.key}",
                "kind": "one-to-one" if _is_one_to_one(rel) else {
                    "ONETOMANY": "one-to-many", "MANYTOONE": "many-to-one", "MANYTOMANY": "many-to-many",
                }[rel.direction.name],
                "target": rel.mapper.class_.__name__,
                "back_populates": rel.back_populates or "",
                "foreign key": ", ".join(f"{c.table.name}.{c.name}" for c in rel.remote_side | rel.local_columns
                                         if c.foreign_keys),
                "cascade": ", ".join(sorted(rel.cascade)),
                "loading": str(rel.lazy),
                "passive_deletes": str(rel.passive_deletes),
            })
    return rows


def _is_one_to_one(rel: Any) -> bool:
    """A scalar on both sides: the one-to-many side declared uselist=False (`Mapped[X | None]`)."""
    if rel.direction.name == "ONETOMANY":
        return not rel.uselist
    if rel.direction.name == "MANYTOONE" and rel.back_populates:
        return not rel.mapper.relationships[rel.back_populates].uselist
    return False
