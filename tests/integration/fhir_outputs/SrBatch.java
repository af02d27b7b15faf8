// All SRs through PixelMed's DicomSRValidator in one JVM (a JVM start per file costs seconds).
// Run as a single-file source program: java -cp pixelmed.jar SrBatch.java FILE...
// Prints "=== FILE" before each file's report.
import com.pixelmed.validate.DicomSRValidator;

public class SrBatch {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String file : args) {
            System.out.println("=== " + file);
            System.out.println(validator.validate(file));
        }
    }
}
