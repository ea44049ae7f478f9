"""The paper's reported numbers, one YAML file per table (table1.yaml ... table8.yaml).

Each file lists the runs taylorat trains for the table (``runs``: label, config under
``configs/paper/``, the paper's numbers), rows from other papers shown for context only
(``context``), and the attacks to evaluate (``evaluate``).
"""
