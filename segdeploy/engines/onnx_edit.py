"""Small edits every ONNX graph rewrite needs (the D-block plugin node, the SegHead node): a
node's attributes as Python values, and dropping what no node or output reads any more.
onnx is imported by the functions; Python 3.6 compatible.
"""


def node_attrs(node):
    """{name: value} of ``node``'s attributes."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def drop_unused(graph):
    """Remove initializers, Constant nodes and value_info no node or output refers to any more."""
    while True:
        used = set(o.name for o in graph.output)
        for node in graph.node:
            used.update(node.input)
        dead = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    produced = set(i.name for i in graph.input) | set(t.name for t in graph.initializer)
    for node in graph.node:
        produced.update(node.output)
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    info = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(info)
