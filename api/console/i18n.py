"""Every word the console shows, in Thai and English: a plain table, no gettext toolchain.

``t(key, lang, **values)`` formats the entry with ``str.format``; a key missing in Thai falls
back to English, a key missing everywhere shows itself (and ``tests/unit/test_console_i18n.py``
fails, which checks every key the templates use).
"""
from __future__ import annotations

LANGUAGES = ["th", "en"]

# key: (English, Thai)
STRINGS: dict[str, tuple[str, str]] = {
    # ---- frame
    "app.title": ("Document numbering console", "คอนโซลเลขที่เอกสาร"),
    "app.console": ("console", "คอนโซล"),
    "app.times": ("Times are {zone} time; hover over one to see it in UTC.",
                  "เวลาที่แสดงเป็นเวลา {zone} วางเมาส์บนเวลาเพื่อดูเวลา UTC"),
    "app.footer": ("docnum · every number is in the ledger and the audit trail",
                   "docnum · ทุกเลขที่มีบันทึกในทะเบียนและประวัติการตรวจสอบ"),
    "nav.templates": ("Templates", "รูปแบบเลขที่"),
    "nav.counters": ("Counters", "ตัวนับ"),
    "nav.lookup": ("Number lookup", "ค้นหาเลขที่"),
    "nav.admin": ("Admin actions", "งานผู้ดูแล"),
    "nav.resets": ("Reset approvals", "อนุมัติรีเซ็ต"),
    "nav.audit": ("Audit", "ประวัติการตรวจสอบ"),
    "yes": ("yes", "ใช่"),
    "no": ("no", "ไม่"),
    "action.filter": ("Filter", "กรอง"),
    "action.show": ("Show", "แสดง"),
    "action.edit": ("Edit", "แก้ไข"),
    "action.history": ("History", "ประวัติ"),
    "action.cancel": ("Cancel", "ยกเลิก"),
    "action.next_page": ("Next page", "หน้าถัดไป"),
    "action.first_page": ("First page", "หน้าแรก"),
    "csrf_failed": ("The form's security token is missing or out of date. Reload the page and "
                    "try again.",
                    "โทเค็นความปลอดภัยของแบบฟอร์มหายไปหรือหมดอายุ กรุณาโหลดหน้าใหม่แล้วลองอีกครั้ง"),
    "http.400": ("Bad request", "คำขอไม่ถูกต้อง"),
    "http.403": ("Forbidden", "ไม่มีสิทธิ์"),
    "http.404": ("Not found", "ไม่พบข้อมูล"),
    "http.405": ("Method not allowed", "ไม่รองรับเมธอดนี้"),
    "http.413": ("File too large", "ไฟล์มีขนาดใหญ่เกินไป"),
    "error.forbidden_hint": ("Your token does not carry the permission this page needs. Ask "
                             "for a token with it, or sign in as another user.",
                             "โทเค็นของคุณไม่มีสิทธิ์ที่หน้านี้ต้องการ "
                             "ขอโทเค็นที่มีสิทธิ์ หรือเข้าสู่ระบบด้วยผู้ใช้อื่น"),
    "error.back_home": ("Back to the start page", "กลับหน้าแรก"),

    # ---- sign-in
    "login.title": ("Sign in", "เข้าสู่ระบบ"),
    "login.explain": ("Paste the bearer token (JWT) you got from the document-management "
                      "system. The console keeps it only in this browser's session cookie "
                      "and checks it on every page.",
                      "วางโทเค็น (JWT) ที่ได้รับจากระบบจัดการเอกสาร คอนโซลเก็บไว้ในคุกกี้ของ"
                      "เบราว์เซอร์นี้เท่านั้น และตรวจสอบทุกครั้งที่เปิดหน้า"),
    "login.token": ("Bearer token", "โทเค็น"),
    "login.hint": ("For local use:", "สำหรับใช้งานในเครื่อง:"),
    "login.sign_in": ("Sign in", "เข้าสู่ระบบ"),
    "login.sign_out": ("Sign out", "ออกจากระบบ"),
    "login.welcome": ("Signed in as {sub}.", "เข้าสู่ระบบในชื่อ {sub} แล้ว"),
    "login.signed_out": ("Signed out.", "ออกจากระบบแล้ว"),
    "login.expired": ("Your token has expired or is no longer valid; sign in again.",
                      "โทเค็นหมดอายุหรือใช้ไม่ได้แล้ว กรุณาเข้าสู่ระบบใหม่"),

    # ---- home
    "home.title": ("Document numbering console", "คอนโซลเลขที่เอกสาร"),
    "home.signed_in_as": ("Signed in as {sub}.", "เข้าสู่ระบบในชื่อ {sub}"),
    "home.permissions": ("Permissions", "สิทธิ์"),
    "home.nothing": ("Your token allows none of the console's pages.",
                     "โทเค็นของคุณไม่มีสิทธิ์เข้าหน้าใดของคอนโซล"),
    "home.card.templates": ("Numbering templates per project: edit, preview, history.",
                            "รูปแบบเลขที่ของแต่ละโครงการ: แก้ไข ดูตัวอย่าง ประวัติ"),
    "home.card.counters": ("Every counter with its use of capacity and its gaps.",
                           "ตัวนับทั้งหมด พร้อมอัตราการใช้และช่องว่างของเลข"),
    "home.card.lookup": ("Is this number genuine? State, source and full history.",
                         "เลขที่นี้ถูกต้องหรือไม่ ดูสถานะ ที่มา และประวัติทั้งหมด"),
    "home.card.admin": ("Void and replace, manual override, bulk import.",
                        "ยกเลิกและออกเลขแทน ลงทะเบียนเลขด้วยตนเอง นำเข้าจากไฟล์"),
    "home.card.resets": ("Counter resets with two-person approval.",
                         "รีเซ็ตตัวนับโดยต้องมีผู้อนุมัติสองคน"),
    "home.card.audit": ("Who did what and when; CSV export.",
                        "ใครทำอะไรเมื่อไร ส่งออกเป็น CSV"),

    # ---- fields
    "field.project": ("Project", "โครงการ"),
    "field.correspondence_type": ("Correspondence type", "ประเภทเอกสาร"),
    "field.originator": ("Originator", "ผู้ส่ง"),
    "field.recipient": ("Recipient", "ผู้รับ"),
    "field.sub_type": ("Sub-type", "ประเภทย่อย"),
    "field.rfa_type": ("RFA type", "ประเภท RFA"),
    "field.discipline": ("Discipline", "สาขางาน"),
    "field.revision": ("Revision", "ฉบับแก้ไข"),
    "field.document_date": ("Document date", "วันที่เอกสาร"),
    "field.document_ref": ("Document reference", "อ้างอิงเอกสาร"),
    "field.document_number": ("Document number", "เลขที่เอกสาร"),
    "field.template": ("Template", "รูปแบบ"),
    "field.reset": ("Reset", "การเริ่มนับใหม่"),
    "field.version": ("Version", "ฉบับ"),
    "field.active": ("Active", "ใช้งาน"),
    "field.change_reason": ("Reason for the change", "เหตุผลของการเปลี่ยนแปลง"),
    "field.counter_key": ("Counter key", "คีย์ตัวนับ"),
    "field.sequence": ("Sequence", "ลำดับ"),
    "field.state": ("State", "สถานะ"),
    "field.source": ("Source", "ที่มา"),
    "field.reason": ("Reason", "เหตุผล"),
    "reset.YEARLY": ("Yearly", "รายปี"),
    "reset.MONTHLY": ("Monthly", "รายเดือน"),
    "reset.FISCAL_YEARLY": ("Fiscal year", "ปีงบประมาณ"),
    "reset.NONE": ("Never", "ไม่เริ่มใหม่"),
    "state.RESERVED": ("Reserved", "จองไว้"),
    "state.CONFIRMED": ("Confirmed", "ยืนยันแล้ว"),
    "state.CANCELLED": ("Cancelled", "ยกเลิกการจอง"),
    "state.EXPIRED": ("Expired", "หมดอายุ"),
    "state.VOID": ("Void", "ยกเลิกแล้ว"),
    "state.MISSING": ("Never issued", "ไม่เคยออก"),
    "source.GENERATE": ("Issued", "ออกเลขโดยระบบ"),
    "source.RESERVE": ("Reserved, then confirmed", "จองแล้วยืนยัน"),
    # A reserved number's source says how far the reservation got: only a confirmed (or later
    # voided) one was confirmed.
    "source.RESERVE.RESERVED": ("Reserved, not confirmed yet", "จองไว้ ยังไม่ยืนยัน"),
    "source.RESERVE.CANCELLED": ("Reserved, then cancelled", "จองแล้วยกเลิก"),
    "source.RESERVE.EXPIRED": ("Reserved, expired unconfirmed", "จองแล้วหมดอายุโดยไม่ยืนยัน"),
    "source.MANUAL": ("Manual override", "ลงทะเบียนด้วยตนเอง"),
    "source.IMPORT": ("Imported", "นำเข้าจากทะเบียนเดิม"),
    "source.REPLACE": ("Replacement", "ออกแทนเลขที่ยกเลิก"),
    "status.PENDING_APPROVAL": ("Waiting for approval", "รออนุมัติ"),
    "status.EXECUTED": ("Executed", "ดำเนินการแล้ว"),
    "status.FAILED": ("Failed", "ไม่สำเร็จ"),

    # ---- templates
    "templates.title": ("Numbering templates", "รูปแบบเลขที่เอกสาร"),
    "templates.project_default": ("project default", "ค่าเริ่มต้นของโครงการ"),
    "templates.none": ("No numbering configs yet.", "ยังไม่มีการตั้งค่าเลขที่"),
    "editor.title": ("Edit template", "แก้ไขรูปแบบ"),
    "editor.saved_template": ("saved template", "รูปแบบที่บันทึกไว้"),
    "editor.tokens": ("Tokens:", "โทเค็นที่ใช้ได้:"),
    "editor.valid": ("The template is valid.", "รูปแบบถูกต้อง"),
    "editor.invalid": ("The template is not valid.", "รูปแบบไม่ถูกต้อง"),
    "editor.rule": ("Rule", "กฎ"),
    "editor.position": ("Position", "ตำแหน่ง"),
    "editor.preview_for": ("Preview for this document", "ดูตัวอย่างสำหรับเอกสารนี้"),
    "editor.preview": ("Next numbers", "เลขที่ถัดไป"),
    "editor.preview_needs_valid": ("Fix the template to see a preview.",
                                   "แก้รูปแบบให้ถูกต้องก่อนจึงจะเห็นตัวอย่าง"),
    "editor.preview_note": ("Read from the real counter; nothing is consumed. Another request "
                            "may take these numbers first.",
                            "อ่านจากตัวนับจริง ไม่มีการใช้เลข คำขออื่นอาจได้เลขเหล่านี้ไปก่อน"),
    "editor.counter": ("Counter", "ตัวนับ"),
    "editor.period": ("period", "รอบ"),
    "editor.date_hint": ("Empty date: today in the service's time zone. Years show as B.E. "
                         "(A.D. + 543) where the template says so: 2026 is B.E. 2569.",
                         "ไม่ระบุวันที่ = วันนี้ตามเขตเวลาของระบบ ปี พ.ศ. = ค.ศ. + 543 "
                         "เช่น ค.ศ. 2026 คือ พ.ศ. 2569"),
    "editor.check": ("Validate and preview", "ตรวจสอบและดูตัวอย่าง"),
    "editor.save": ("Save new version", "บันทึกฉบับใหม่"),
    "editor.reason_placeholder": ("at least 10 characters: why the change",
                                  "อย่างน้อย 10 ตัวอักษร: เหตุผลที่เปลี่ยน"),
    "editor.saved": ("Saved as version {version}.", "บันทึกเป็นฉบับที่ {version} แล้ว"),
    "rule.empty": ("the template must be text", "รูปแบบต้องเป็นข้อความ"),
    "rule.length": ("the template is too long (at most 100 characters)",
                    "รูปแบบยาวเกินไป (ไม่เกิน 100 ตัวอักษร)"),
    "rule.unbalanced_brace": ("a brace is not part of a token",
                              "วงเล็บปีกกาไม่ได้เป็นส่วนของโทเค็น"),
    "rule.literal_character": ("a character that is not allowed between tokens",
                               "มีอักขระที่ใช้ไม่ได้ระหว่างโทเค็น"),
    "rule.seq_width": ("{SEQ:n} needs a width from 1 to 9", "{SEQ:n} ต้องมีความกว้าง 1 ถึง 9"),
    "rule.unknown_token": ("an unknown token", "โทเค็นที่ไม่รู้จัก"),
    "rule.seq_missing": ("the template needs exactly one {SEQ:n}",
                         "รูปแบบต้องมี {SEQ:n} หนึ่งตัว"),
    "rule.seq_repeated": ("{SEQ:n} appears more than once", "มี {SEQ:n} มากกว่าหนึ่งตัว"),
    "rule.reset": ("unknown reset", "การเริ่มนับใหม่ไม่ถูกต้อง"),
    "rule.reset_needs_year": ("this reset needs a year token", "การเริ่มนับใหม่นี้ต้องมีโทเค็นปี"),
    "rule.reset_needs_month": ("a monthly reset needs {MM}", "การเริ่มนับใหม่รายเดือนต้องมี {MM}"),
    "rule.reset_needs_fiscal_year": ("a fiscal-year reset needs {FY:…}",
                                     "การเริ่มนับใหม่ตามปีงบประมาณต้องมี {FY:…}"),
    "rule.counter_scope": ("the counter scope names a dimension the template does not show",
                           "ขอบเขตตัวนับอ้างถึงมิติที่ไม่มีในรูปแบบ"),
    "history.title": ("Version history", "ประวัติการแก้ไข"),
    "history.changed_by": ("Changed by", "แก้ไขโดย"),
    "history.changed_at": ("When", "เมื่อ"),
    "history.diff": ("Change", "การเปลี่ยนแปลง"),

    # ---- counters
    "counters.title": ("Counters", "ตัวนับ"),
    "counters.last": ("Last sequence", "ลำดับล่าสุด"),
    "counters.capacity": ("Capacity", "ความจุ"),
    "counters.utilization": ("Used", "ใช้ไปแล้ว"),
    "counters.legend": ("Amber above 90 % of capacity, red above 95 %: widen {SEQ:n} or plan "
                        "the next period before the counter is exhausted.",
                        "สีเหลืองเมื่อใช้เกิน 90 % สีแดงเมื่อเกิน 95 % ให้ขยาย {SEQ:n} "
                        "หรือวางแผนรอบถัดไปก่อนที่ตัวนับจะเต็ม"),
    "counters.gaps": ("Gaps", "ช่องว่าง"),
    "counters.reset": ("Reset…", "รีเซ็ต…"),
    "counters.none": ("No counter has been used yet.", "ยังไม่มีตัวนับที่ถูกใช้"),
    "gaps.title": ("Gap report", "รายงานช่องว่างของเลข"),
    "gaps.explain": ("Every sequence of the counter that is not a confirmed number, and why.",
                     "ทุกลำดับของตัวนับที่ไม่ใช่เลขที่ยืนยันแล้ว พร้อมเหตุผล"),
    "gaps.reason": ("Why", "เหตุผล"),
    "gaps.none": ("No gaps: every sequence is a confirmed number.",
                  "ไม่มีช่องว่าง ทุกลำดับเป็นเลขที่ยืนยันแล้ว"),

    # ---- lookup
    "lookup.title": ("Number lookup", "ค้นหาเลขที่เอกสาร"),
    "lookup.find": ("Look up", "ค้นหา"),
    "lookup.optional": ("optional", "ไม่บังคับ"),
    "lookup.genuine": ("Issued by docnum and confirmed.", "ออกโดย docnum และยืนยันแล้ว"),
    "lookup.void_warning": ("This number was voided; do not use it.",
                            "เลขนี้ถูกยกเลิกแล้ว ห้ามใช้"),
    "lookup.issued_by": ("Issued by", "ออกโดย"),
    "lookup.issued_at": ("Issued at", "ออกเมื่อ"),
    "lookup.no_counter": ("none (a legacy number outside the template)",
                          "ไม่มี (เลขเดิมที่ไม่ตรงรูปแบบ)"),
    "lookup.config": ("Config", "การตั้งค่า"),
    "lookup.request_id": ("Request id", "รหัสคำขอ"),
    "lookup.voided": ("Voided", "ยกเลิกโดย"),
    "lookup.replaces": ("Replaces", "ออกแทน"),
    "lookup.replaced_by": ("Replaced by", "ถูกแทนด้วย"),
    "lookup.chain": ("Void and replace chain", "ลำดับการยกเลิกและออกแทน"),
    "lookup.history": ("Audit history", "ประวัติการตรวจสอบ"),
    "lookup.verified": ("Verified: as issued, on its hash chain, in signed checkpoint "
                        "{checkpoint}.",
                        "ตรวจสอบแล้ว: ตรงกับที่ออก อยู่ในสายแฮช และอยู่ในจุดตรวจที่ลงนามแล้ว "
                        "{checkpoint}"),
    "lookup.verify_pending": ("As issued and on its hash chain; not yet in a signed "
                              "checkpoint (the next one covers it).",
                              "ตรงกับที่ออกและอยู่ในสายแฮช แต่ยังไม่อยู่ในจุดตรวจที่ลงนาม "
                              "(จุดตรวจถัดไปจะครอบคลุม)"),
    "lookup.verify_failed": ("Verification FAILED: this record was changed after it was "
                             "issued, or its chain was. Run docnum verify.",
                             "การตรวจสอบไม่ผ่าน: ข้อมูลนี้หรือสายแฮชถูกแก้ไขหลังออกเลข "
                             "ให้รัน docnum verify"),
    "lookup.row_hash": ("Row hash", "แฮชของแถว"),

    # ---- admin actions
    "admin.title": ("Admin actions", "งานผู้ดูแล"),
    "admin.continue": ("Continue…", "ดำเนินการต่อ…"),
    "admin.back": ("Back to admin actions", "กลับไปงานผู้ดูแล"),
    "admin.done": ("Done", "เสร็จแล้ว"),
    "admin.void.title": ("Void and replace", "ยกเลิกและออกเลขแทน"),
    "admin.void.explain": ("Only a confirmed number can be voided. The replacement is issued "
                           "on the same counter in the same transaction.",
                           "ยกเลิกได้เฉพาะเลขที่ยืนยันแล้ว เลขที่ออกแทนจะออกจากตัวนับเดิม"
                           "ในธุรกรรมเดียวกัน"),
    "admin.void.replace": ("Issue a replacement", "ออกเลขแทน"),
    "admin.override.title": ("Manual override", "ลงทะเบียนเลขด้วยตนเอง"),
    "admin.override.explain": ("Register a legacy or corrected number as confirmed. If it fits "
                               "the template, its counter is raised past it.",
                               "ลงทะเบียนเลขเดิมหรือเลขที่แก้ไขเป็นยืนยันแล้ว ถ้าตรงกับรูปแบบ "
                               "ตัวนับจะถูกเลื่อนให้เกินเลขนั้น"),
    "admin.import.title": ("Bulk import", "นำเข้าจากไฟล์"),
    "admin.import.explain": ("Upload a CSV (UTF-8) or XLSX file with the columns",
                             "อัปโหลดไฟล์ CSV (UTF-8) หรือ XLSX ที่มีคอลัมน์"),
    "admin.import.optional": ("optional:", "ไม่บังคับ:"),
    "admin.import.dry_run": ("Upload and check (dry run)", "อัปโหลดและตรวจสอบ (ทดลอง)"),
    "admin.confirm.title": ("Please confirm", "กรุณายืนยัน"),
    "admin.confirm.void": ("Void {number}? This cannot be undone: the number stays in the "
                           "ledger as void.",
                           "ยกเลิก {number} หรือไม่ ทำย้อนกลับไม่ได้ เลขนี้จะอยู่ในทะเบียน"
                           "ในสถานะยกเลิก"),
    "admin.confirm.replace_note": ("A replacement number will be issued for the same document.",
                                   "ระบบจะออกเลขใหม่แทนสำหรับเอกสารเดิม"),
    "admin.confirm.void_button": ("Void the number", "ยืนยันการยกเลิก"),
    "admin.confirm.override": ("Register {number} as a confirmed number?",
                               "ลงทะเบียน {number} เป็นเลขที่ยืนยันแล้วหรือไม่"),
    "admin.confirm.fits": ("It fits the template: counter {key} (now at {last}) will be at "
                           "least {seq} afterwards.",
                           "ตรงกับรูปแบบ: ตัวนับ {key} (ตอนนี้ {last}) จะถูกเลื่อนเป็นอย่างน้อย "
                           "{seq}"),
    "admin.confirm.legacy": ("It does not fit the template: it is stored as a legacy number "
                             "and no counter moves.",
                             "ไม่ตรงกับรูปแบบ: จะเก็บเป็นเลขเดิมและไม่มีตัวนับใดเปลี่ยน"),
    "admin.confirm.override_button": ("Register the number", "ยืนยันการลงทะเบียน"),
    "admin.result.voided": ("Voided:", "ยกเลิกแล้ว:"),
    "admin.result.replacement": ("Replacement:", "เลขที่ออกแทน:"),
    "admin.result.registered": ("Registered:", "ลงทะเบียนแล้ว:"),
    "import.title": ("Import report", "รายงานการนำเข้า"),
    "import.dry_run_note": ("Dry run: nothing has been written yet.",
                            "ทดลองตรวจสอบ: ยังไม่มีการบันทึกใดๆ"),
    "import.rows": ("Rows in the file", "จำนวนแถวในไฟล์"),
    "import.importable": ("Would be imported", "จะนำเข้า"),
    "import.imported": ("Imported", "นำเข้าแล้ว"),
    "import.already": ("Already imported (skipped)", "เคยนำเข้าแล้ว (ข้าม)"),
    "import.errors": ("Errors", "ข้อผิดพลาด"),
    "import.row": ("Row", "แถว"),
    "import.code": ("Code", "รหัส"),
    "import.field": ("Field", "ช่อง"),
    "import.message": ("Message", "รายละเอียด"),
    "import.raises": ("Counters that will move", "ตัวนับที่จะเลื่อน"),
    "import.from": ("From", "จาก"),
    "import.to": ("To", "เป็น"),
    "import.commit": ("Import {n} numbers", "นำเข้า {n} เลขที่"),
    "import.committed": ("Imported {n} numbers ({skipped} were already imported).",
                         "นำเข้าแล้ว {n} เลขที่ (เคยนำเข้าแล้ว {skipped})"),
    "import.fix_first": ("Fix the errors and upload the file again; nothing is imported while "
                         "any row is bad.",
                         "แก้ข้อผิดพลาดแล้วอัปโหลดใหม่ ระบบจะไม่นำเข้าเลยถ้ามีแถวที่ผิด"),
    "import.nothing": ("Nothing new to import.", "ไม่มีรายการใหม่ให้นำเข้า"),
    "import.gone": ("The uploaded file is no longer available (it is kept for one hour); "
                    "upload it again.",
                    "ไม่พบไฟล์ที่อัปโหลดแล้ว (เก็บไว้หนึ่งชั่วโมง) กรุณาอัปโหลดใหม่"),

    # ---- resets
    "resets.title": ("Counter reset approvals", "การอนุมัติรีเซ็ตตัวนับ"),
    "resets.explain": ("A SUPER_ADMIN files a reset; two other SUPER_ADMINs approve it and the "
                       "second approval executes it. A counter can never go below its floor, "
                       "the highest sequence ever issued on it.",
                       "SUPER_ADMIN ยื่นคำขอรีเซ็ต และ SUPER_ADMIN อีกสองคนอนุมัติ "
                       "การอนุมัติครั้งที่สองจะดำเนินการทันที ตัวนับต้องไม่ต่ำกว่าเลขสูงสุด"
                       "ที่เคยออกไปแล้ว"),
    "resets.file": ("File a reset request", "ยื่นคำขอรีเซ็ต"),
    "resets.check_floor": ("Check the floor", "ตรวจสอบเลขต่ำสุดที่ตั้งได้"),
    "resets.floor_line": ("Now at {last} of {capacity}. Floor (highest sequence ever issued): "
                          "{floor}; the new value must be at least {floor}.",
                          "ตอนนี้ {last} จาก {capacity} เลขสูงสุดที่เคยออก: {floor} "
                          "ค่าใหม่ต้องไม่น้อยกว่า {floor}"),
    "resets.no_counter": ("No such counter has been used yet.", "ยังไม่มีตัวนับนี้"),
    "resets.check_first": ("Enter a counter key and check its floor; the request form follows.",
                           "กรอกคีย์ตัวนับแล้วตรวจสอบเลขต่ำสุดก่อน จากนั้นจึงกรอกคำขอได้"),
    "resets.config": ("Config", "การตั้งค่า"),
    "resets.new_last": ("New last sequence", "ลำดับล่าสุดใหม่"),
    "resets.reason_placeholder": ("at least 20 characters", "อย่างน้อย 20 ตัวอักษร"),
    "resets.file_button": ("File the request", "ยื่นคำขอ"),
    "resets.filed": ("Reset request {id} filed; it waits for two approvals.",
                     "ยื่นคำขอรีเซ็ต {id} แล้ว รอการอนุมัติสองคน"),
    "resets.approved": ("Approved reset request {id}; one more approval executes it.",
                        "อนุมัติคำขอ {id} แล้ว ต้องการอีกหนึ่งการอนุมัติ"),
    "resets.executed": ("Approved and executed reset request {id}.",
                        "อนุมัติและดำเนินการคำขอ {id} แล้ว"),
    "resets.pending": ("Waiting for approval", "รออนุมัติ"),
    "resets.done": ("Finished requests", "คำขอที่เสร็จสิ้น"),
    "resets.requested_by": ("Requested by", "ผู้ขอ"),
    "resets.floor": ("Floor check", "ตรวจสอบเลขต่ำสุด"),
    "resets.floor_ok": ("OK (floor {floor})", "ผ่าน (ต่ำสุด {floor})"),
    "resets.floor_bad": ("below the floor {floor}: will fail", "ต่ำกว่า {floor}: จะไม่สำเร็จ"),
    "resets.approvals": ("Approvals", "การอนุมัติ"),
    "resets.approve": ("Approve", "อนุมัติ"),
    "resets.now": ("now", "ปัจจุบัน"),
    "resets.yours": ("your request", "คำขอของคุณ"),
    "resets.you_approved": ("you approved", "คุณอนุมัติแล้ว"),
    "resets.none_pending": ("No request is waiting.", "ไม่มีคำขอที่รออนุมัติ"),
    "resets.none_done": ("None yet.", "ยังไม่มี"),
    "resets.executed_at": ("Finished at", "เสร็จเมื่อ"),

    # ---- audit
    "audit.title": ("Audit trail", "ประวัติการตรวจสอบ"),
    "audit.at": ("When", "เมื่อ"),
    "audit.operation": ("Operation", "การดำเนินการ"),
    "audit.actor": ("Actor", "ผู้ดำเนินการ"),
    "audit.result": ("Result", "ผลลัพธ์"),
    "audit.details": ("Details", "รายละเอียด"),
    "audit.show": ("show", "แสดง"),
    "audit.any": ("any", "ทั้งหมด"),
    "audit.succeeded": ("succeeded", "สำเร็จ"),
    "audit.failed": ("failed", "ไม่สำเร็จ"),
    "audit.from": ("From", "ตั้งแต่"),
    "audit.to": ("Until", "ถึง"),
    "audit.export": ("Export CSV", "ส่งออก CSV"),
    "audit.utc": ("Archived rows are included. The From/Until dates are UTC days.",
                  "รวมรายการที่เก็บถาวรแล้ว วันที่ตั้งแต่/ถึง เป็นวันตามเวลา UTC"),
    "audit.refused": ("refused", "ถูกปฏิเสธ"),
    "audit.none": ("No audit rows match.", "ไม่พบรายการ"),
}


def has(key: str) -> bool:
    return key in STRINGS


def t(key: str, lang: str = "en", /, **values: object) -> str:
    entry = STRINGS.get(key)
    if entry is None:
        return key
    text = entry[1] if lang == "th" and entry[1] else entry[0]
    if values:
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError):
            return text
    return text


__all__ = ["LANGUAGES", "STRINGS", "has", "t"]
