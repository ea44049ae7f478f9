"""The paper's reported numbers, one YAML file per table (table1.yaml ... table8.yaml).

Each file holds the settings its runs share (``base``: paper §5), the runs taylorat trains for
the table (``runs``: label, the run's own settings, the paper's numbers), rows from other papers
shown for context only (``context``), and the attacks to evaluate (``evaluate``). The run
configs are built from these files at run time, so an installed package reproduces a table
without a checkout (``taylorat reproduce table2 --write-configs DIR`` writes them out).
"""
