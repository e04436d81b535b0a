"""q2c's Tryton module: the server-side half of the Tryton connector.

q2c rates time itself and posts its own customer invoice in Tryton; the timesheet lines
that invoice bills must then point at its lines (`timesheet.line.invoice_line`), so that
Tryton counts them as invoiced and its own project invoicing leaves them alone. Tryton
declares that field read-only: only server code (its project invoicing button) may set
it, and an RPC `write` is refused. This module adds one RPC method that links (and
unlinks) timesheet lines to customer invoice lines, with the checks a person would make.

It also lets a project work's number be given when the work is created (`work.py`), as a
party's code can be: q2c numbers the projects it creates from its own key, so Tryton's
unique number, not a raced sequence, decides between concurrent creates.

It records the day a work is set Done (`work.py`), and gives project disbursements (q2c's
expenses) a category and the q2c invoice line that billed them (`disbursement.py`).

It imports nothing of q2c: install it in a production Tryton like any module (copy this
folder to `trytond/modules/q2c`, or declare a `trytond.modules` entry point `q2c` that
names this package), then activate it (`trytond-admin -u q2c`).
"""

#: The module's name in Tryton (`ir.module`), and the RPC method it adds to `timesheet.line`
#: (time billed) and to `project.disbursement` (expenses billed).
MODULE_NAME = "q2c"
LINK_METHOD = "q2c_link_invoice_lines"
