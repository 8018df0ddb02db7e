# Debian's Sisimai (libsisimai-perl) as an oracle: one score.py-format JSON line per file.
# perl bench/sisimai_oracle.pl FILES > out.jsonl   (no Sisimai code here, only calls to it)
use strict; use warnings; use Sisimai; use JSON::PP;
my $json = JSON::PP->new->canonical;
for my $f (@ARGV) {
  open(my $fh, '<:raw', $f) or die; local $/; my $d = <$fh>; close $fh;
  my $v = Sisimai->make(\$d, input => 'string', delivered => 1, vacation => 1);
  my @r = $v ? @$v : ();
  my (@rc, @res);
  for my $e (@r) {
    push @rc, lc($e->recipient->address);
    push @res, {recipient => lc($e->recipient->address), status => $e->deliverystatus // '', reason => $e->reason // '', hard => (($e->softbounce // 1) == 0 ? JSON::PP::true : JSON::PP::false), replycode => $e->replycode // ''};
  }
  my $first = $res[0] // {};
  my $reason = $first->{reason} // '';
  my $cat = !@r ? 'other' : $reason eq 'feedback' ? 'feedback' : $reason eq 'vacation' ? 'autoreply' : $reason eq 'delivered' ? 'other' : 'bounce';
  (my $name = $f) =~ s{.*/emails/}{emails/};
  print $json->encode({file => $name, recipients => \@rc, status => $first->{status} // '', replycode => $first->{replycode} // '', reason => $reason, hard => $first->{hard} // JSON::PP::false, category => $cat, results => \@res}), "\n";
}
